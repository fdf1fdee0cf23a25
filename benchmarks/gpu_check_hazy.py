"""GPU parity and speed of the hazyresearch families (Based, JRT-RNN, attention baseline) in one device run.

    python benchmarks/gpu_check_hazy.py --out $OUT            # on the device (H100/H200)
    python benchmarks/gpu_check_hazy.py --smoke               # CPU, toy sizes: the same code paths

Models are built in memory at the paper's 360M widths (d 1024, 27 layers for Based, 26 for JRT-RNN,
24 for attention; f = 16, 16 heads, SWA window 256) with random weights (the hub is unreachable).

1. parity, fp32: the fused Triton kernels vs the plain-PyTorch references (``JRT_EVAL_KERNELS=reference``)
   on the whole model; recurrent decode vs the parallel forward; CUDA-graph decode vs eager decode (rows
   leaving the batch, a second generate replaying the graph); a left-padded batch vs each row alone.
2. speed: batch 32, 950- and 1900-token prompts, 48 greedy tokens (no stop), in the paper's precision
   (fp32 weights under bf16 autocast) with the fused kernels: decode replayed as CUDA graphs (the default)
   and eager (``cuda_graphs=False``) in the same run, vs the same model on the PyTorch references (eager);
   greedy agreement of graphed vs eager and of the bf16-autocast run with an fp32 run; peak GPU memory.
   ``--smoke`` (CPU) runs the graph bookkeeping without capture (``cuda_graphs="static"``).

A short table is printed last; everything goes to ``<out>/gpu_check_hazy.json``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jrt_eval.model_adapters import hazy_gpt  # noqa: E402
from jrt_eval.model_adapters.base import cast_matmul_weights, greedy_generate, left_pad  # noqa: E402

TAYLOR16 = {"_target_": "based.models.mixers.linear_attention.TaylorExp", "input_dim": 16}
WIDTHS = {  # reference-models.md §2.1, §3.1, §4 (360M scale)
    "based": dict(n_embd=1024, n_head=16, n_layer=27, n_inner=2048, alt_mixer_layers=[1, 6, 11, 16, 21],
                  alt_mixer_2_layers=[2, 7, 12, 17, 22], alt_mixer={"feature_dim": 16, "num_heads": 16,
                                                                    "feature_map": TAYLOR16},
                  alt_mixer_2={"window_size": 256, "num_heads": 16}),
    "jrt_rnn": dict(n_embd=1024, n_head=16, n_layer=26, n_inner=2048, alt_mixer_layers=[1, 6, 11, 16, 21],
                    alt_mixer_2_layers=[2, 7, 12, 17, 22], enc_length=1024,
                    alt_mixer={"feature_dim": 16, "num_heads": 16, "enc_length": 1024, "dec_length": 1024},
                    alt_mixer_2={"window_size": 256, "num_heads": 16}),
    "attn": dict(n_embd=1024, n_head=16, n_layer=24, n_inner=2816),
}
SMOKE = {  # CPU: same structure, toy widths
    "based": dict(alt_mixer={"feature_dim": 16, "num_heads": 2, "feature_map": TAYLOR16}),
    "jrt_rnn": dict(alt_mixer={"feature_dim": 16, "num_heads": 2}),
    "attn": dict(),
}
RESULTS: dict = {}
ROWS: list = []


def build(family: str, smoke: bool, device, seed: int = 0):
    config = hazy_gpt.tiny_config(family, **(SMOKE if smoke else WIDTHS)[family])
    spec = hazy_gpt.parse_config(config, family)
    model = hazy_gpt.build_model(spec, None, config, device="meta")
    model.load_state_dict(hazy_gpt.random_weights(model, seed), strict=True, assign=True)
    return model.to(device).eval()


@contextmanager
def kernels(mode: str):
    old = os.environ.get("JRT_EVAL_KERNELS")
    os.environ["JRT_EVAL_KERNELS"] = mode
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("JRT_EVAL_KERNELS")
        else:
            os.environ["JRT_EVAL_KERNELS"] = old


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def record(section, name, value, note=""):
    RESULTS.setdefault(section, {})[name] = value
    ROWS.append((section, name, value, note))
    print(f"[{section}] {name}: {value} {note}", flush=True)


def graph_mode(device) -> object:
    """What ``cuda_graphs`` means "graphed" here: real CUDA graphs on CUDA, the static bookkeeping on CPU."""
    return True if device.type == "cuda" else "static"


@contextmanager
def graphs(model, mode):
    old = model.cuda_graphs
    model.cuda_graphs = mode
    try:
        yield
    finally:
        model.cuda_graphs = old


def free_graphs(*models):
    for m in models:
        m.release_graphs()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_reset():
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float:
    return torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else float("nan")


def parity(family, model, device, T):
    gen = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(0, 50257, (2, T), generator=gen).to(device)
    with torch.inference_mode():
        with kernels("auto"):
            fused = model(ids)
        with kernels("reference"):
            ref = model(ids)
        record("parity", f"{family} fused vs reference logits rel", f"{rel(fused, ref):.2e}", f"fp32 T={T}")
        n, k = T - 8, 8
        with kernels("auto"):
            full = model(ids[:, : n + k])
            last, cache = model.prefill(ids[:, :n])
            steps = [last]
            for j in range(k - 1):
                steps.append(model.step(ids[:, n + j], cache))
        step_logits = torch.stack(steps, 1)
        record("parity", f"{family} decode vs parallel rel", f"{rel(step_logits, full[:, n - 1: n + k - 1]):.2e}")
        rows = [ids[0, : T // 2].tolist(), ids[1].tolist()]
        pid, pmask = left_pad(rows, 0, device)
        with kernels("auto"):
            batched = model(pid, pmask)
            alone = model(torch.tensor([rows[0]], device=device))
        record("parity", f"{family} left-padded row vs alone rel",
               f"{rel(batched[0, -T // 2:], alone[0]):.2e}")
    graph_parity(family, model, device, T)


def graph_parity(family, model, device, T, new_tokens=24):
    """Greedy decode with the step replayed as a CUDA graph vs eager, fp32, fused kernels: four left-padded
    prompts, two rows leaving early (stop rule), then the same generate again (replays the captured graph)."""
    gen = torch.Generator(device="cpu").manual_seed(4)
    seqs = [torch.randint(0, 50257, (n,), generator=gen).tolist() for n in (T, T // 3, T // 2, 7)]
    pid, pmask = left_pad(seqs, 0, device)
    logged = {}

    class Recorder:  # keeps the logits greedy_generate sees
        def __init__(self, key):
            self.key = key
            logged[key] = []

        def prefill(self, *a):
            out = model.prefill(*a)
            logged[self.key].append(out[0].clone())
            return out

        def step(self, ids, cache):
            out = model.step(ids, cache)
            logged[self.key].append(out.clone())
            return out

    stop_at = {}

    def is_done(tokens):  # rows 1 and 3 stop after 5 and 11 tokens (keyed by their first token)
        return len(tokens) >= stop_at.get(tokens[0], 10 ** 9)

    with torch.inference_mode(), kernels("auto"):
        with graphs(model, False):
            free = greedy_generate(model, pid, pmask, new_tokens, None, vocab_limit=50257).tokens
        stop_at.update({free[1][0]: 5, free[3][0]: 11})
        with graphs(model, False):
            eager = greedy_generate(Recorder("eager"), pid, pmask, new_tokens, is_done, vocab_limit=50257)
        sync()
        t0 = time.perf_counter()
        with graphs(model, graph_mode(device)):
            first = greedy_generate(Recorder("graph"), pid, pmask, new_tokens, is_done, vocab_limit=50257)
            sync()
            t_first = time.perf_counter() - t0
            again = greedy_generate(Recorder("again"), pid, pmask, new_tokens, is_done, vocab_limit=50257)
    worst = max(rel(a, b) for key in ("graph", "again") for a, b in zip(logged[key], logged["eager"]))
    same = eager.tokens == first.tokens == again.tokens
    record("parity", f"{family} graphed vs eager decode logits rel (max over steps)", f"{worst:.2e}",
           f"tokens {'identical' if same else 'DIFFER'}; rows leaving at 5 and 11 tokens; first graphed generate "
           f"(with capture) {t_first:.2f} s; {len(model._graphs)} graph(s)")
    free_graphs(model)


def timed_generate(model, ids, mask, new_tokens, autocast, reps=1, cuda_graphs=None, info=None, overlap=None):
    """Best of ``reps`` timed runs (seconds) after one untimed run at the same shapes (JIT, allocator, graph
    capture); ``cuda_graphs`` overrides the model's setting for these runs, ``overlap`` is greedy_generate's.
    ``info`` (a dict) receives the untimed first run's time and the peak GPU memory."""
    best, tokens = float("inf"), None
    mode = model.cuda_graphs if cuda_graphs is None else cuda_graphs
    peak_reset()
    with graphs(model, mode):
        for i in range(reps + 1):
            sync()
            t0 = time.perf_counter()
            with torch.inference_mode(), torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
                out = greedy_generate(model, ids, mask, new_tokens, None, vocab_limit=50257, overlap=overlap)
            sync()
            elapsed = time.perf_counter() - t0
            if i == 0 and info is not None:
                info["first"] = elapsed
            if tokens is not None:
                best = min(best, elapsed)
            tokens = out.tokens
    if info is not None:
        info["peak_gb"] = peak_gb()
    return best, tokens


def timed_prefill(model, ids, autocast, reps=2):
    best = float("inf")
    for i in range(reps + 1):
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
            model.prefill(ids, None)
        sync()
        if i:
            best = min(best, time.perf_counter() - t0)
    return best


def speed(family, fp32_model, device, batch, lengths, new_tokens, reps):
    """amp_bf16 as the lm-eval adapter runs it: Linear weights stored in bf16, bf16 autocast."""
    import copy

    model = copy.deepcopy(fp32_model)  # (captured graphs are not copied)
    cast_matmul_weights(model, torch.bfloat16)
    gen = torch.Generator(device="cpu").manual_seed(2)
    mode = graph_mode(device)
    for L in lengths:
        ids = torch.randint(0, 50257, (batch, L), generator=gen).to(device)
        g_info, e_info = {}, {}
        with kernels("auto"):
            t_graph, toks_graph = timed_generate(model, ids, None, new_tokens, True, reps, mode, g_info)
            t_eager, toks_eager = timed_generate(model, ids, None, new_tokens, True, reps, False, e_info)
            t_pre = timed_prefill(model, ids, True)
            _, toks_fp32 = timed_generate(fp32_model, ids, None, new_tokens, False, 0, mode)
        agree = sum(a == b for a, b in zip(toks_graph, toks_fp32)) / batch
        first = sum(a[0] == b[0] for a, b in zip(toks_graph, toks_fp32)) / batch
        same = sum(a == b for a, b in zip(toks_graph, toks_eager)) / batch
        with kernels("reference"):
            t_ref, _ = timed_generate(model, ids, None, new_tokens, True, 1, False)
            t_ref_pre = timed_prefill(model, ids, True, 1)
        graph_note = "CUDA graph" if mode is True else "static buffers, no capture (CPU)"
        record("speed", f"{family} L={L} fused amp_bf16 s/batch", f"{t_graph:.3f}",
               f"{graph_note}: {batch / t_graph:.1f} prompts/s (prefill {t_pre:.3f} s; first call with capture "
               f"{g_info['first']:.3f} s; peak {g_info['peak_gb']:.1f} GiB); eager {t_eager:.3f} s: "
               f"{t_eager / t_graph:.2f}x")
        record("speed", f"{family} L={L} fused amp_bf16 eager s/batch", f"{t_eager:.3f}",
               f"cuda_graphs=False: {batch / t_eager:.1f} prompts/s (peak {e_info['peak_gb']:.1f} GiB); "
               f"PyTorch reference path (eager) {t_ref:.3f} s (prefill {t_ref_pre:.3f} s): {t_ref / t_eager:.1f}x")
        record("speed", f"{family} L={L} greedy text graphed = eager", f"{same:.0%}", "bf16 autocast, both fused")
        record("speed", f"{family} L={L} greedy text = fp32 run", f"{agree:.0%}", f"first token {first:.0%}")
        free_graphs(model, fp32_model)  # attention: each graph holds batch x capacity KV buffers (GBs)


def profile(model, device, batch, L, new_tokens, top=14):
    """Where the time of one fused generate goes (CUDA kernels, by total time)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    ids = torch.randint(0, 50257, (batch, L), generator=torch.Generator().manual_seed(3)).to(device)
    with kernels("auto"):
        timed_generate(model, ids, None, new_tokens, True, 0)
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            timed_generate(model, ids, None, new_tokens, True, 0)
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=60)
    print(table, flush=True)
    RESULTS.setdefault("profile", []).append(table)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--smoke", action="store_true", help="CPU, toy widths, short prompts")
    ap.add_argument("--families", default="based,jrt_rnn,attn")
    ap.add_argument("--deadline", type=float, default=480, help="seconds; later sections are skipped")
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions (best of), after one warm-up run")
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--profile", action="store_true", help="profile one generate per family at the longest L")
    ap.add_argument("--lengths", default="950,1900", help="prompt lengths of the speed runs")
    args = ap.parse_args()
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    start = time.perf_counter()
    batch, lengths, new = (4, [40, 80], 6) if args.smoke else (32, [int(x) for x in args.lengths.split(",")], 48)
    for family in args.families.split(","):
        if time.perf_counter() - start > args.deadline:
            record("skipped", family, "deadline")
            continue
        try:
            model = build(family, args.smoke, device)
            if not args.skip_parity:
                parity(family, model, device, 96 if args.smoke else 1900)
            speed(family, model, device, batch, lengths, new, args.reps)
            if args.profile:
                profile(model, device, batch, lengths[-1], new)
            free_graphs(model)  # graphs hold the model (their step function) and their buffers
            del model
            gc.collect()
        except Exception as exc:  # one family failing must not hide the others
            record("error", family, f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check_hazy.json").write_text(json.dumps(
        {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
         "torch": torch.__version__, "results": RESULTS}, indent=2))
    print("\n| section | check | value | note |\n| --- | --- | --- | --- |")
    for section, name, value, note in ROWS:
        print(f"| {section} | {name} | {value} | {note} |")


if __name__ == "__main__":
    main()
