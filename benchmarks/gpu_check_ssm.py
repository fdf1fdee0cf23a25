"""GPU checks and speed of the Mamba / Mamba-2 / GLA adapters (reference-models.md §10 items 11 and 14, and the
speed goal), in one run that fits a device lease.

    # device: carry the wheels fla_core-0.6.0, flash_linear_attention-0.6.0 (py3-none-any) and transformers-5.23.0
    # in an ignored folder (here .whl_ssm, named in run's carry), then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl_ssm/*.whl
    PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check_ssm.py --out $OUT --deadline 500
    # CPU smoke run of the same code paths at toy sizes (no Triton, no fla, no CUDA graphs):
    python benchmarks/gpu_check_ssm.py --smoke

Sections (each fails alone; a summary table is printed last and everything goes to ``$OUT/gpu_check_ssm.json``):

1. kernels — Triton Mamba-1 scan / state update and GLA step vs the float64 references, chunked SSD and the
   Triton SSD prefill (fp32 and bf16 inputs) vs the sequential SSD, the Triton SSD step vs the PyTorch step,
   fla ``chunk_gla`` / ``fused_recurrent_gla`` vs our chunked GLA; real widths, fp32 and bf16; Triton scan and
   SSD prefill times.
2. parity — whole models with random weights at real widths (Mamba-130M, Mamba-2-130M) and a small GLA, fp32 on
   GPU: our fast path vs transformers' path (Mamba, Mamba-2) or our torch path and fla's ``GLAForCausalLM``
   (GLA, also bf16); CUDA-graph decode vs the parallel forward; left-padded batch vs rows alone.
3. speed — batch 32, 48 greedy tokens, 950- and 1900-token prompts: our greedy_generate in the CUDA default
   dtype(s) vs the anchors measured in the same run (transformers ``generate`` for Mamba-130M / Mamba-2-130M in
   bf16, fla ``generate`` for GLA-1.3B in bf16), and agreement of the greedy tokens with an fp32 run of ours.
   Weights are random (the hub is unreachable), scaled so that logits have O(1) margins; agreement figures on
   random weights are only indicative. GLA's are rounded to bf16 first, the dtype its checkpoints are published in.
4. agree_gla — GLA-1.3B's greedy agreement of bf16 with fp32 on those weights, ours and fla's own
   ``GLAForCausalLM`` side by side (what the ≥ 99% goal asks of a maintained bf16 implementation on them).

Output goes to ``$OUT/log.txt`` line by line and ``$OUT/gpu_check_ssm.json`` / ``summary.txt`` after every
section, so a run cut short still returns what it measured (do not pipe stdout through ``grep``: it buffers).
Costs to plan for: fla autotunes every GLA kernel on first use, per dtype and head size (a minute or more each),
so fla runs only in bf16 at GLA-1.3B's head dims here; transformers' generate anchors take ~4–8 s per batch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jrt_eval.kernels.mamba import reference as R  # noqa: E402
from jrt_eval.kernels.mamba import scan as S  # noqa: E402
from jrt_eval.model_adapters import gla, mamba, mamba2  # noqa: E402
from jrt_eval.model_adapters.base import greedy_generate, left_pad  # noqa: E402

RESULTS: dict = {}
SUMMARY: list = []
SPEED_INPUTS: dict = {}  # (family, L) -> (ids, mask) of the speed runs, reused by the anchors
SPEED_TOKENS: dict = {}
START = time.perf_counter()
DEADLINE = [float("inf")]  # seconds after START; sections and sub-steps past it are skipped
LOG_FILE = [None]
OUT_DIR = [Path(".")]

MAMBA_130M = {"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": True,
              "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8}
MAMBA2_130M = {"d_model": 768, "d_intermediate": 0, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {"layer": "Mamba2"},
               "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
               "fused_add_norm": True, "pad_vocab_size_multiple": 16, "tie_embeddings": True}
GLA_13B = gla.tiny_config(hidden_size=2048, num_hidden_layers=24, num_heads=4, vocab_size=32000, bos_token_id=1,
                          eos_token_id=2, attn_mode="fused_chunk")


SMOKE_MAMBA2_SSM = {"layer": "Mamba2", "headdim": 16, "d_state": 16, "chunk_size": 16}


def family_config(family: str, smoke: bool) -> tuple:
    """(config, vocabulary size) of the runs: the published widths, or toy widths with ``--smoke``."""
    if family == "gla":
        return (gla.tiny_config(vocab_size=32000) if smoke else GLA_13B), 32000
    cfg = MAMBA_130M if family == "mamba" else MAMBA2_130M
    if smoke:
        cfg = dict(cfg, d_model=64, n_layer=2, **({"ssm_cfg": SMOKE_MAMBA2_SSM} if family == "mamba2" else {}))
    return cfg, 50277


def log(*args):
    line = " ".join(str(a) for a in args)
    print(line, flush=True)
    if LOG_FILE[0] is not None:
        with open(LOG_FILE[0], "a") as f:
            f.write(line + "\n")


def time_left() -> float:
    return DEADLINE[0] - (time.perf_counter() - START)


def need(seconds: float, what: str) -> bool:
    """False (and a note) when less than ``seconds`` remain before the deadline."""
    if time_left() < seconds:
        record(f"skipped.{what}", f"deadline ({time_left():.0f} s left, needs ~{seconds:.0f})")
        return False
    return True


def save():
    OUT_DIR[0].mkdir(parents=True, exist_ok=True)
    (OUT_DIR[0] / "gpu_check_ssm.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    with open(OUT_DIR[0] / "summary.txt", "w") as f:
        for key, val, note in SUMMARY:
            f.write(f"{key:60s} {val} {note}\n")


def section(name):
    def wrap(fn):
        def run(*a, **k):
            log(f"\n=== {name} (t={time.perf_counter() - START:.0f} s)")
            t = time.perf_counter()
            try:
                fn(*a, **k)
            except Exception as exc:  # keep going: one broken section must not cost the whole lease
                RESULTS.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
                SUMMARY.append((name, "ERROR", f"{type(exc).__name__}: {str(exc)[:160]}"))
                traceback.print_exc()
            log(f"=== {name}: {time.perf_counter() - t:.1f} s")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            save()
        return run
    return wrap


def diff(a, b) -> dict:
    a, b = a.double(), b.double()
    return {"rel": float((a - b).norm() / b.norm().clamp_min(1e-30)), "max_abs": float((a - b).abs().max()),
            "ref_max": float(b.abs().max())}


def record(key, value, note=""):
    RESULTS[key] = value
    if isinstance(value, dict) and "rel" in value:
        text = f"rel {value['rel']:.2e}  max|Δ| {value['max_abs']:.2e} (|ref| {value['ref_max']:.1f})"
    else:
        text = str(value)
    SUMMARY.append((key, text, note))
    log(f"  {key}: {text} {note}")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, reps=3, warmup=1):
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def left_padded_batch(batch, lengths, vocab, device, seed):
    gen = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]
    ids, mask = left_pad(seqs, 0, device)
    return seqs, ids, mask


# ===================================================================================== 1. kernels
@section("kernels")
def check_kernels(dev, smoke):
    """Our Triton kernels (or the torch paths on CPU) vs float64 references, real widths."""
    from jrt_eval.kernels.mamba import (gla_gate, gla_step, selective_scan_fn, selective_state_update, ssd_step,
                                        triton_usable)

    g = torch.Generator(device=dev).manual_seed(0)
    b, T, d, n = (2, 40, 24, 16) if smoke else (4, 1000, 1536, 16)

    def rn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, device=dev) * scale

    x, dt, z = rn(b, T, d), rn(b, T, d) - 1, rn(b, T, d)
    A = -torch.exp(rn(d, n, scale=0.5))
    Bm, Cm, D, db = rn(b, T, n), rn(b, T, n), rn(d), rn(d, scale=0.1)
    mask = torch.ones(b, T, dtype=torch.long, device=dev)
    mask[0, : T // 3] = 0
    h0 = rn(b, d, n)
    backend = "triton" if triton_usable(x) else "torch"
    record("kernel.backend", backend)
    ref_y, ref_h = S.selective_scan_torch(*(t.double() for t in (x, dt, A, Bm, Cm, D, z, db)), mask=mask,
                                          initial_state=h0.double())
    y, h = selective_scan_fn(x, dt, A, Bm, Cm, D=D, z=z, dt_bias=db, mask=mask, initial_state=h0, backend=backend)
    record("kernel.mamba_scan.fp32", diff(y, ref_y), f"[{b},{T},{d},{n}] vs float64")
    record("kernel.mamba_scan.state.fp32", diff(h, ref_h))
    xb, dtb, zb, Bb, Cb = (t.bfloat16() for t in (x, dt, z, Bm, Cm))
    ref_yb, _ = S.selective_scan_torch(*(t.double() for t in (xb, dtb, A, Bb, Cb, D, zb, db)), mask=mask,
                                       initial_state=h0.double())
    yb, _ = selective_scan_fn(xb, dtb, A, Bb, Cb, D=D, z=zb, dt_bias=db, mask=mask, initial_state=h0, backend=backend)
    record("kernel.mamba_scan.bf16_io", diff(yb, ref_yb), "bf16 inputs/outputs, fp32 state")
    st, st_ref = h0.clone(), h0.double().clone()
    ys = selective_state_update(st, x[:, 0], dt[:, 0], A, Bm[:, 0], Cm[:, 0], D=D, z=z[:, 0], dt_bias=db, backend=backend)
    yr = R.selective_state_update_ref(st_ref, x[:, 0], dt[:, 0], A, Bm[:, 0], Cm[:, 0], D=D, z=z[:, 0], dt_bias=db)
    record("kernel.mamba_step", diff(ys, yr))
    record("kernel.mamba_step.state", diff(st, st_ref))
    if backend == "triton":
        from jrt_eval.kernels.mamba.selective_scan import selective_scan_triton

        bb, TT = 32, 1900
        xs = torch.randn(bb, TT, 1536, device=dev, dtype=torch.bfloat16)
        Bs = torch.randn(bb, TT, 16, device=dev, dtype=torch.bfloat16)
        t, _ = timed(lambda: selective_scan_triton(xs, xs, A, Bs, Bs, D=D, z=xs, dt_bias=db), reps=5)
        gb = (4 * xs.numel() * 2 + 2 * Bs.numel() * 2) / 1e9
        record("kernel.mamba_scan.time_ms[32x1900x1536]", round(t * 1e3, 3), f"{gb / t:.0f} GB/s effective")
        del xs, Bs

    bh = (2, 2, 32, 24) if smoke else (32, 4, 256, 512)
    Sg = rn(*bh)
    q, k, gk = rn(*bh[:3]), rn(*bh[:3]), torch.nn.functional.logsigmoid(rn(*bh[:3]) + 2) / 16
    v = rn(bh[0], bh[1], bh[3])
    S1 = Sg.clone()
    o1 = gla_step(S1, q, k, v, gk, bh[2] ** -0.5, backend=backend)
    o_ref, S_ref = R.gla_recurrent_ref(q[:, None].double(), k[:, None].double(), v[:, None].double(),
                                       gk[:, None].double(), initial_state=Sg.double())
    record("kernel.gla_step", diff(o1, o_ref[:, 0]), f"{list(bh)}")
    record("kernel.gla_step.state", diff(S1, S_ref))
    # the forget gate from its rank-16 activations: over a prompt (its own launch) and inside the step (float32,
    # so no rounding of the linear: against float64)
    xg, wg, bg = rn(bh[0], 16) * 3, rn(bh[1] * bh[2], 16) / 4, rn(bh[1] * bh[2]) + 2
    g_ref = S.gla_gate_torch(xg.double(), wg.double(), bg.double(), 16)
    record("kernel.gla_gate", diff(gla_gate(xg, wg, bg, 16, backend=backend), g_ref), "logsigmoid(x W^T + b) / 16")
    S1 = Sg.clone()
    o1 = gla_step(S1, q, k, v, None, bh[2] ** -0.5, backend=backend, gate=(xg, wg, bg, 16, None))
    o_ref, S_ref = R.gla_recurrent_ref(q[:, None].double(), k[:, None].double(), v[:, None].double(),
                                       g_ref.view(bh[:3])[:, None], initial_state=Sg.double())
    record("kernel.gla_step.fused_gate", diff(o1, o_ref[:, 0]), "the gate computed in the step kernel")
    record("kernel.gla_step.fused_gate.state", diff(S1, S_ref))

    b2, T2, H, P, N = (2, 37, 4, 8, 16) if smoke else (2, 600, 24, 64, 128)
    xs, dts = rn(b2, T2, H, P), rn(b2, T2, H) - 2
    As, Bs, Cs = -torch.exp(rn(H, scale=0.5)), rn(b2, T2, 1, N), rn(b2, T2, 1, N)
    Ds, dbs = rn(H), rn(H, scale=0.1)
    m2 = torch.ones(b2, T2, dtype=torch.long, device=dev)
    m2[1, : T2 // 4] = 0
    y_ref, s_ref = R.ssd_sequential_ref(*(t.double() for t in (xs, dts, As, Bs, Cs, Ds, dbs)), mask=m2)
    y_c, s_c = S.ssd_chunked(xs, dts, As, Bs, Cs, 8 if smoke else 256, D=Ds, dt_bias=dbs, mask=m2)
    record("kernel.ssd_chunked.fp32", diff(y_c, y_ref), f"[{b2},{T2},{H},{P},{N}] vs sequential float64")
    record("kernel.ssd_chunked.state.fp32", diff(s_c, s_ref))
    # decode steps from the reference state (dispatcher: the Triton step on GPU, the PyTorch step on CPU)
    k = 4
    xk, dtk, Bk, Ck = rn(b2, k, H, P), rn(b2, k, H) - 2, rn(b2, k, 1, N), rn(b2, k, 1, N)
    yk_ref, sk_ref = R.ssd_sequential_ref(*(t.double() for t in (xk, dtk, As, Bk, Ck, Ds, dbs)), initial_state=s_ref)
    st_a, st_b = s_ref.float(), s_ref.float()
    worst_ref, worst_torch = None, None
    for j in range(k):
        args = (xk[:, j], dtk[:, j], As, Bk[:, j], Ck[:, j])
        ya = ssd_step(st_a, *args, D=Ds, dt_bias=dbs, backend=backend, out_dtype=torch.float32)
        yb = S.ssd_step_torch(st_b, *args, D=Ds, dt_bias=dbs)
        e_ref, e_torch = diff(ya, yk_ref[:, j]), diff(ya, yb)
        worst_ref = e_ref if worst_ref is None or e_ref["rel"] > worst_ref["rel"] else worst_ref
        worst_torch = e_torch if worst_torch is None or e_torch["rel"] > worst_torch["rel"] else worst_torch
    record("kernel.ssd_step", worst_ref, f"{k} steps from the sequential state, vs float64")
    record("kernel.ssd_step.state", diff(st_a, sk_ref))
    if backend == "triton":
        from jrt_eval.kernels.mamba import ssd_triton

        record("kernel.ssd_triton.step_vs_torch_step", worst_torch, "same float32 state and inputs")
        record("kernel.ssd_triton.step_vs_torch_step.state", diff(st_a, st_b))
        for dt16 in (torch.bfloat16, torch.float16):  # a 16-bit state (state_dtype="model"): one rounding per step
            s16 = s_ref.to(dt16)
            s32 = s16.float()
            args = (xk[:, 0], dtk[:, 0], As, Bk[:, 0], Ck[:, 0])
            y16 = ssd_step(s16, *args, D=Ds, dt_bias=dbs, backend=backend, out_dtype=torch.float32)
            y32 = S.ssd_step_torch(s32, *args, D=Ds, dt_bias=dbs)
            ulps = ((s16.double() - s32.double()).abs() / s32.double().abs().clamp_min(1e-3)).max() / torch.finfo(dt16).eps
            name = str(dt16)[6:]
            record(f"kernel.ssd_triton.step_{name}_state", diff(y16, y32), "vs the PyTorch step on the same upcast state")
            record(f"kernel.ssd_triton.step_{name}_state.ulps", round(float(ulps), 3),
                   "new state vs the float32 step, in eps of its dtype (round to nearest: <= 0.5)")
        y_t, s_t = ssd_triton.ssd_prefill_triton(xs, dts, As, Bs, Cs, D=Ds, dt_bias=dbs, mask=m2,
                                                 out_dtype=torch.float32)
        record("kernel.ssd_triton.fp32", diff(y_t, y_ref), f"[{b2},{T2},{H},{P},{N}] vs sequential float64")
        record("kernel.ssd_triton.state.fp32", diff(s_t, s_ref))
        xb, dtb, Bb, Cb = (t.bfloat16() for t in (xs, dts, Bs, Cs))
        y_rb, s_rb = R.ssd_sequential_ref(*(t.double() for t in (xb, dtb, As, Bb, Cb, Ds, dbs)), mask=m2)
        for mix in ("bf16", "tf32"):
            y_tb, s_tb = ssd_triton.ssd_prefill_triton(xb, dtb, As, Bb, Cb, D=Ds, dt_bias=dbs, mask=m2,
                                                       out_dtype=torch.float32, config={"mix": mix})
            record(f"kernel.ssd_triton.bf16_in.mix_{mix}", diff(y_tb, y_rb),
                   f"bf16 x/dt/B/C vs float64 of the same; derived operands in {mix}, fp32 state")
            record(f"kernel.ssd_triton.state.bf16_in.mix_{mix}", diff(s_tb, s_rb))
        del xb, dtb, Bb, Cb
        # speed at Mamba-2-130M widths, batch 32 x 1900 tokens, one layer
        bb, TT = 32, 1900
        xt = torch.randn(bb, TT, H, P, device=dev, dtype=torch.bfloat16)
        dtt = torch.randn(bb, TT, H, device=dev, dtype=torch.bfloat16) - 2
        Bt = torch.randn(bb, TT, 1, N, device=dev, dtype=torch.bfloat16)
        t_chunked, _ = timed(lambda: S.ssd_chunked(xt, dtt, As, Bt, Bt, 256, D=Ds, dt_bias=dbs), reps=3)
        shape = f"[{bb}x{TT}x{H}x{P}x{N}]"
        for tag, dtype, cfg in (("bf16", torch.bfloat16, None), ("bf16.mix_tf32", torch.bfloat16, {"mix": "tf32"}),
                                ("fp32", torch.float32, None)):
            xi, dti, Bi = (t.to(dtype) for t in (xt, dtt, Bt))
            t, _ = timed(lambda: ssd_triton.ssd_prefill_triton(xi, dti, As, Bi, Bi, D=Ds, dt_bias=dbs,
                                                               out_dtype=torch.float32, config=cfg), reps=5)
            kk = ssd_triton.LAST_KERNEL
            try:
                info = f"regs {kk.n_regs} spills {kk.n_spills} smem {kk.metadata.shared}"
            except Exception as exc:  # compile info is a nicety
                info = f"(no compile info: {type(exc).__name__})"
            record(f"kernel.ssd_triton.time_ms{shape}.{tag}", round(t * 1e3, 3),
                   f"ssd_chunked (bf16 in, fp32 math) {t_chunked * 1e3:.1f} ms = {t_chunked / t:.1f}x; {info}")
            del xi, dti, Bi
        st = torch.zeros(bb, H, P, N, device=dev)
        t_step, _ = timed(lambda: ssd_triton.ssd_step_triton(st, xt[:, 0], dtt[:, 0], As, Bt[:, 0], Bt[:, 0], D=Ds,
                                                             dt_bias=dbs, out_dtype=torch.float32), reps=20)
        t_step_torch, _ = timed(lambda: S.ssd_step_torch(st, xt[:, 0], dtt[:, 0], As, Bt[:, 0], Bt[:, 0], D=Ds,
                                                         dt_bias=dbs), reps=20)
        gb = 2 * st.numel() * 4 / 1e9
        record(f"kernel.ssd_triton.step_time_ms[{bb}x{H}x{P}x{N}]", round(t_step * 1e3, 4),
               f"{gb / t_step:.0f} GB/s state r+w; torch step {t_step_torch * 1e3:.3f} ms (eager, no graph)")
        del xt, dtt, Bt, st


@section("fla_kernels")
def check_fla_kernels(dev, smoke):
    """fla chunk_gla / fused_recurrent_gla (with our pad masking) vs our chunked GLA in float64; bf16 only, at
    GLA-1.3B's head dims (K 256, V 512), the shapes the speed runs autotune anyway."""
    from jrt_eval.kernels.mamba import fla_usable, gla_prefill

    g = torch.Generator(device=dev).manual_seed(1)
    b3, T3, H3, K3, V3 = (2, 70, 2, 16, 24) if smoke else (2, 700, 4, 256, 512)

    def rn(*shape):
        return torch.randn(*shape, generator=g, device=dev)

    q3, k3, v3 = rn(b3, T3, H3, K3), rn(b3, T3, H3, K3), rn(b3, T3, H3, V3)
    g3 = torch.nn.functional.logsigmoid(rn(b3, T3, H3, K3) + 2) / 16
    m3 = torch.ones(b3, T3, dtype=torch.long, device=dev)
    m3[0, :50] = 0
    if not fla_usable(q3):
        record("kernel.fla", "not usable here: skipped")
        return
    for TT in (T3, 50):
        qb, kb, vb = (t[:, :TT].bfloat16() for t in (q3, k3, v3))
        o_f, s_f = gla_prefill(qb, kb, vb, g3[:, :TT], scale=K3 ** -0.5, mask=m3[:, :TT], backend="fla")
        o_r, s_r = S.gla_chunked(qb.double(), kb.double(), vb.double(), g3[:, :TT].double(), mask=m3[:, :TT])
        tag = "chunk" if TT > 64 else "fused_recurrent"
        record(f"kernel.fla_{tag}_gla.bf16", diff(o_f, o_r), "vs our chunked GLA in float64, left-padded rows")
        record(f"kernel.fla_{tag}_gla.state.bf16", diff(s_f, s_r))


# ===================================================================================== 2. parity
def _mamba_model(family, cfg, dev, dtype, impl="fast", seed=0, kernels="auto", **load_opts):
    """Random weights of ``cfg``'s widths through the adapters' loader (``load_opts``: load_weights', e.g.
    state_dtype)."""
    mod = {"mamba": mamba, "mamba2": mamba2}[family]
    spec = mod.parse_config(cfg)
    model = mod.build_model(spec, cfg, device="meta", impl=impl, kernels=kernels)
    weights = (mamba.random_mamba_weights if family == "mamba" else mamba2.random_mamba2_weights)(spec, seed, dev)
    return mamba.load_weights(model, weights, f"random {family}", dev, dtype, **load_opts)


def _gla_weights(cfg, dev, seed=0):
    """Random GLA weights rounded to bfloat16, the dtype the published checkpoints store (model.safetensors, 2.73 GB
    for GLA-1.3B), held as float32: every run in any dtype starts from the same bf16 values, so an fp32 run is
    "an fp32 run of the same weights" as a bf16 run (before 2026-11-24 the fp32 runs kept the unrounded values)."""
    sd = gla.random_gla_weights(gla.parse_config(cfg), seed, dev)
    return {k: v.to(torch.bfloat16).float() for k, v in sd.items()}


def _gla_model(cfg, dev, dtype, seed=0, kernels="auto"):
    spec = gla.parse_config(cfg)
    model = gla.build_model(spec, cfg, device="meta", kernels=kernels)
    model.load_state_dict(_gla_weights(cfg, dev, seed), strict=True, assign=True)
    return model.to(dev, dtype).eval()


def _fla_gla(cfg, sd, dev, dtype):
    """fla's own ``GLAForCausalLM`` of ``cfg`` with the weights ``sd`` (fla's names: ours), in ``dtype``."""
    import fla  # noqa: F401
    from fla.models import GLAConfig, GLAForCausalLM

    fcfg = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures", "torch_dtype")}
    if fcfg.get("attn_mode") == "fused_chunk":  # the published config's mode; fla 0.6.0 removed that kernel
        fcfg["attn_mode"] = "chunk"  # (run on the H100, 2026-11-23: NotImplementedError in fla's layer)
    with torch.device("meta"):
        hf = GLAForCausalLM(GLAConfig(**fcfg))
    hf.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return hf.to(dev).eval()


def decode_parity(model, ids, n, k):
    full = model(ids[:, : n + k])
    last, cache = model.prefill(ids[:, :n])
    errs = [diff(last, full[:, n - 1])]
    for j in range(n, n + k - 1):
        errs.append(diff(model.step(ids[:, j], cache), full[:, j]))
    return max(errs, key=lambda e: e["rel"])


def padding_parity(model, vocab, dev, lengths=(257, 33, 2, 130), seed=3):
    seqs, ids, mask = left_padded_batch(len(lengths), lengths, vocab, dev, seed)
    full = model(ids, mask)
    worst = None
    for i, s in enumerate(seqs):
        alone = model(torch.tensor([s], device=dev))
        e = diff(full[i, -len(s):], alone[0])
        worst = e if worst is None or e["rel"] > worst["rel"] else worst
    g_batch = greedy_generate(model, ids, mask, 12).tokens
    g_alone = [greedy_generate(model, torch.tensor([s], device=dev), None, 12).tokens[0] for s in seqs]
    return worst, g_batch == g_alone


@section("parity_mamba")
def check_parity_mamba(dev, smoke):
    for family in ("mamba", "mamba2"):
        if not need(40, f"parity.{family}"):
            continue
        cfg, _ = family_config(family, smoke)
        fast = _mamba_model(family, cfg, dev, torch.float32)
        seqs, ids, mask = left_padded_batch(3, (300, 257, 180) if not smoke else (40, 33, 20), 50277, dev, 1)
        keep = mask.bool()
        ref = _mamba_model(family, cfg, dev, torch.float32, impl="hf")
        record(f"parity.{family}.fast_vs_transformers.fp32", diff(fast(ids, mask)[keep], ref(ids, mask)[keep]),
               "real positions of a left-padded batch, 130M widths")
        del ref
        ids1 = torch.tensor([seqs[0]], device=dev).repeat(2, 1)
        record(f"parity.{family}.decode_vs_forward.fp32", decode_parity(fast, ids1, 7, 9),
               "prefill 7 + 8 steps" + (" (CUDA graph)" if dev.type == "cuda" else ""))
        worst, same = padding_parity(fast, 50277, dev)
        record(f"parity.{family}.padded_vs_alone.fp32", worst)
        record(f"parity.{family}.padded_vs_alone.greedy_identical", same)
        if dev.type == "cuda":
            half = _mamba_model(family, cfg, dev, torch.bfloat16)
            record(f"parity.{family}.fast_bf16_vs_fp32", diff(half(ids, mask)[keep], fast(ids, mask)[keep]))
            if family == "mamba2":
                # on CUDA ``fast`` and ``half`` run the Triton SSD (the default): fp32 against the PyTorch SSD path,
                # and the bf16 decode and padding checks (the fp32 ones are fast's, above)
                want = _mamba_model(family, cfg, dev, torch.float32, kernels="torch")(ids, mask)[keep]
                record("parity.mamba2.triton_float32_vs_torch_fp32", diff(fast(ids, mask)[keep], want))
                record("parity.mamba2.triton_bfloat16.decode_vs_forward", decode_parity(half, ids1, 7, 9),
                       "Triton prefill + Triton step (CUDA graph)")
                worst, same = padding_parity(half, 50277, dev)
                record("parity.mamba2.triton_bfloat16.padded_vs_alone", worst)
                record("parity.mamba2.triton_bfloat16.padded_vs_alone.greedy_identical", same)
            del half
        del fast


@section("parity_gla")
def check_parity_gla(dev, smoke):
    """A GLA checkpoint with GLA-1.3B's head dims (2 heads of K 256 / V 512, 4 layers) written to disk. fp32: our
    torch prefill + Triton decode step (CUDA graph) vs the parallel forward, padding invariance. bf16: our CUDA
    path (fla prefill) vs our fp32 torch path and vs fla's own GLAForCausalLM (fla only in bf16: each dtype costs
    a full autotune of fla's kernels)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        over = dict(hidden_size=1024, num_heads=2, num_hidden_layers=4) if not smoke else {}
        folder = gla.write_tiny_checkpoint(Path(tmp) / "gla", seed=0, **over)
        ref32 = gla.load_model(str(folder), device=dev, kernels="triton" if dev.type == "cuda" else "torch")
        seqs, ids, mask = left_padded_batch(3, (300, 257, 180) if not smoke else (70, 33, 20), 50257, dev, 2)
        keep = mask.bool()
        ids1 = torch.tensor([seqs[0]], device=dev).repeat(2, 1)
        record("parity.gla.decode_vs_forward.fp32", decode_parity(ref32, ids1, 7, 9), "torch prefill, Triton step")
        worst, same = padding_parity(ref32, 50257, dev)
        record("parity.gla.padded_vs_alone.fp32", worst)
        record("parity.gla.padded_vs_alone.greedy_identical", same)
        l32 = ref32(ids, mask)[keep]
        del ref32
        if dev.type != "cuda" or not need(60, "parity.gla.bf16_ours"):
            return
        dtype = torch.bfloat16
        mine = gla.load_model(str(folder), device=dev, dtype=dtype)
        lo = mine(ids, mask)[keep]
        record("parity.gla.ours_bf16_fla_vs_ours_fp32_torch", diff(lo, l32))
        record("parity.gla.decode_vs_forward.bf16", decode_parity(mine, ids1, 70, 6), "fla prefill, Triton step")
        # fla's own model autotunes its kernels for each new shape: it ran past a 330 s deadline on an H100
        # (2026-11-23, fourth session), so it needs the time of a run of its own
        if not need(400, "parity.gla.bf16_fla_GLAForCausalLM"):
            return
        import fla  # noqa: F401
        from transformers import AutoModelForCausalLM

        ref = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).to(dev).eval()
        with torch.inference_mode():
            lr = ref(input_ids=ids, attention_mask=mask).logits.float()[keep]
        record("parity.gla.ours_bf16_vs_fla_GLAForCausalLM_bf16", diff(lo, lr), "real positions, left-padded batch")
        record("parity.gla.fla_GLAForCausalLM_bf16_vs_ours_fp32", diff(lr, l32), "fla's own bf16 error, for scale")


# ===================================================================================== 3. speed
def agreement(a, b):
    return sum(x == y for x, y in zip(a, b)) / max(len(a), 1)


def divergence(a, b) -> str:
    """Where rows that differ first differ (one flipped near-tie changes the rest of a greedy row): a note for
    the agreement figures, which count a row as different from its first differing token on."""
    firsts = [next(i for i, (x, y) in enumerate(zip(p, q)) if x != y) for p, q in zip(a, b)
              if p != q and any(x != y for x, y in zip(p, q))]
    if not firsts:
        return "no row differs"
    return f"{len(firsts)} rows differ, first differing token at {sorted(firsts)}"


def bench_ours(model, ids, mask, new_tokens, reps):
    out = {}

    def run():
        out["tokens"] = greedy_generate(model, ids, mask, new_tokens).tokens

    t, _ = timed(run, reps=reps, warmup=1)
    return t, out["tokens"]


def bench_hf_generate(hf_model, ids, mask, new_tokens, reps=3):
    """Median seconds of ``reps`` timed ``generate`` calls (and their tokens, and every time). transformers'
    PyTorch Mamba paths are host-bound (many small kernels per step), so one call varied by ±25% between runs
    on the same GPU (Mamba-2 at 1900: 1.68-2.11 s): the median of three is the anchor."""
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    times = []
    with torch.inference_mode():
        # warm-up at the timed shape: fla autotunes its kernels per shape (87 s on an H100 for GLA-1.3B at
        # 32 x 1900), which a 16-token warm-up left inside the timed call
        hf_model.generate(ids, attention_mask=mask, **{**kw, "max_new_tokens": 2, "min_new_tokens": 2})
        sync()
        for _ in range(reps):
            t = time.perf_counter()
            out = hf_model.generate(ids, attention_mask=mask, **kw)
            sync()
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2], out[:, ids.shape[1]:].tolist(), times


def gla_speed_setup(dev, smoke):
    """GLA-1.3B in bf16 on the fast path with the speed runs' prompts (batch 32 of 1900 tokens, 48 new), or toy
    widths in fp32 on the CPU path with ``smoke``: the A/B benchmarks' common workload."""
    cfg, vocab = family_config("gla", smoke)
    batch, L, new = (4, 40, 6) if smoke else (32, 1900, 48)
    model = _gla_model(cfg, dev, torch.float32 if smoke else torch.bfloat16, kernels="torch" if smoke else "auto")
    ids, _ = speed_prompts(vocab, batch, L, dev)
    return model, ids, new


def speed_prompts(vocab, batch, L, dev):
    """The speed runs' prompts: ``batch`` random rows of ``L`` tokens, seeded by ``L``, no padding."""
    ids = torch.randint(0, vocab, (batch, L), generator=torch.Generator().manual_seed(L)).to(dev)
    return ids, torch.ones_like(ids)


def speed_family(family, cfg, vocab, dev, smoke, anchors, reps, fp32_lengths, dtypes, torch_ssd=True):
    B, NEW = (4, 6) if smoke else (32, 48)
    lengths = (40, 80) if smoke else (950, 1900)
    if dev.type != "cuda":
        dtypes = [torch.float32]

    def build(dt):
        if family == "gla":  # the fp32 reference of GLA runs our torch prefill (fla autotunes per dtype)
            return _gla_model(cfg, dev, dt, kernels="auto" if dt != torch.float32 else
                              ("triton" if dev.type == "cuda" else "torch"))
        return _mamba_model(family, cfg, dev, dt)

    for L in lengths:
        if not need(30, f"speed.{family}.L{L}"):
            continue
        ids, mask = speed_prompts(vocab, B, L, dev)
        ref_tokens = None
        SPEED_INPUTS[(family, L)] = (ids, mask)
        if dev.type == "cuda" and L in fp32_lengths and need(40, f"speed.{family}.L{L}.fp32"):
            m32 = build(torch.float32)
            t32, ref_tokens = bench_ours(m32, ids, mask, NEW, reps=1)
            record(f"speed.{family}.L{L}.ours_fp32_s_per_batch", round(t32, 3))
            with torch.inference_mode():  # how close to ties these random weights are: bf16 noise flips near-ties
                top2 = m32.prefill(ids, mask)[0].float().topk(2, dim=-1).values
            gap = (top2[:, 0] - top2[:, 1]).sort().values
            record(f"speed.{family}.L{L}.fp32_top1_top2_logit_gap", f"median {gap.median().item():.3f}",
                   f"min {gap[0].item():.4f}; first token after the prompt, fp32 run")
            del m32
            torch.cuda.empty_cache()
        for dt in dtypes:
            if not need(20, f"speed.{family}.L{L}.{dt}"):
                continue
            model = build(dt)
            t, toks = bench_ours(model, ids, mask, NEW, reps)
            name = str(dt)[6:]
            SPEED_TOKENS[(family, L, name)] = toks
            record(f"speed.{family}.L{L}.ours_{name}_s_per_batch", round(t, 3), f"{B / t:.1f} prompts/s")
            if ref_tokens is not None:
                record(f"speed.{family}.L{L}.ours_{name}_greedy_agree_fp32", agreement(toks, ref_tokens),
                       f"share of rows with identical {NEW} tokens; {divergence(toks, ref_tokens)}")
            if family != "gla" and dev.type == "cuda" and need(25, f"speed.{family}.L{L}.{name}.float32_state"):
                # state_dtype="float32": the decode's SSM state in float32 instead of the weights' dtype (the default,
                # mamba_ssm's cache)
                ms = _mamba_model(family, cfg, dev, dt, state_dtype="float32")
                tm, mtoks = bench_ours(ms, ids, mask, NEW, reps)
                record(f"speed.{family}.L{L}.ours_{name}_float32_state_s_per_batch", round(tm, 3),
                       f"{B / tm:.1f} prompts/s; the default (state in {name}) is {tm / t:.2f}x faster")
                if ref_tokens is not None:
                    record(f"speed.{family}.L{L}.ours_{name}_float32_state_greedy_agree_fp32",
                           agreement(mtoks, ref_tokens), divergence(mtoks, ref_tokens))
                record(f"speed.{family}.L{L}.ours_{name}_float32_state_greedy_agree_default", agreement(mtoks, toks))
                del ms
            if (torch_ssd and family == "mamba2" and dev.type == "cuda"
                    and need(30, f"speed.{family}.L{L}.{name}.torch_ssd")):
                # the PyTorch SSD path (kernels="torch") against the default Triton one, same weights and prompts
                mt = _mamba_model(family, cfg, dev, dt, kernels="torch")
                tt, ttoks = bench_ours(mt, ids, mask, NEW, reps)
                record(f"speed.{family}.L{L}.ours_torch_ssd_{name}_s_per_batch", round(tt, 3),
                       f"{B / tt:.1f} prompts/s; the default Triton path is {tt / t:.2f}x faster")
                record(f"speed.{family}.L{L}.ours_torch_ssd_{name}_greedy_agree_triton_path", agreement(ttoks, toks))
                del mt
            if L == lengths[0] and dt == dtypes[0]:
                _, pids, pmask = left_padded_batch(B, [int(L * (0.6 + 0.4 * i / B)) for i in range(B)], vocab, dev, 5)
                tp, _ = bench_ours(model, pids, pmask, NEW, reps)
                record(f"speed.{family}.L{L}.ours_{name}_mixed_lengths_s_per_batch", round(tp, 3), "0.6L..L, left-padded")
            if anchors and family != "gla" and dt == torch.bfloat16 and dev.type == "cuda" and need(45, f"speed.{family}.L{L}.anchor"):
                _anchor(family, cfg, model, ids, mask, NEW, L, toks, dev)
            del model
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        save()


def _anchor(family, cfg, ours, ids, mask, new_tokens, L, our_tokens, dev):
    key = f"speed.{family}.L{L}.anchor"
    try:
        if family in ("mamba", "mamba2"):
            from transformers import Mamba2ForCausalLM, MambaForCausalLM

            mod = mamba if family == "mamba" else mamba2
            spec = mod.parse_config(cfg)
            with torch.device("meta"):
                hf = (MambaForCausalLM if family == "mamba" else Mamba2ForCausalLM)(mod.hf_config(spec))
            sd = {k: v.to(torch.bfloat16) for k, v in ours.hf.state_dict().items()}
            hf.load_state_dict(sd, strict=True, assign=True)
            hf.lm_head.weight = hf.backbone.embeddings.weight
            hf = hf.to(dev).eval()
            name = "transformers_generate_bf16"
        else:
            hf = _fla_gla(cfg, ours.state_dict(), dev, torch.bfloat16)
            name = "fla_generate_bf16"
        t, toks, times = bench_hf_generate(hf, ids, mask, new_tokens, reps=3 if dev.type == "cuda" else 1)
        record(f"{key}.{name}_s_per_batch", round(t, 3), "median of " + " / ".join(f"{x:.3f}" for x in times))
        ours_t = RESULTS.get(f"speed.{family}.L{L}.ours_bfloat16_s_per_batch")
        if ours_t:
            record(f"{key}.speedup_ours_bf16", round(t / ours_t, 1), "x")
        f32_state_t = RESULTS.get(f"speed.{family}.L{L}.ours_bfloat16_float32_state_s_per_batch")
        if f32_state_t:
            record(f"{key}.speedup_ours_bf16_float32_state", round(t / f32_state_t, 1), "x (state_dtype=float32)")
        record(f"{key}.greedy_agree_ours_bf16", agreement(toks, our_tokens))
        del hf
    except torch.OutOfMemoryError as exc:
        record(f"{key}.result", f"OOM: {str(exc)[:120]}")
    if dev.type == "cuda":
        torch.cuda.empty_cache()


@section("speed_mamba")
def check_speed_mamba(dev, smoke, anchors, reps):
    cfg, vocab = family_config("mamba", smoke)
    speed_family("mamba", cfg, vocab, dev, smoke, anchors, reps, (950, 1900, 40), [torch.bfloat16, torch.float16])


@section("speed_mamba2")
def check_speed_mamba2(dev, smoke, anchors, reps, skip=()):
    cfg, vocab = family_config("mamba2", smoke)
    speed_family("mamba2", cfg, vocab, dev, smoke, anchors, reps, (950, 1900, 40), [torch.bfloat16, torch.float16],
                 torch_ssd="torch_ssd" not in skip)


@section("speed_gla")
def check_speed_gla(dev, smoke, anchors, reps):
    cfg, vocab = family_config("gla", smoke)
    speed_family("gla", cfg, vocab, dev, smoke, anchors, reps, (950, 40), [torch.bfloat16])


@section("anchor_gla")
def check_anchor_gla(dev, smoke, lengths=(1900,)):
    """fla's GLAForCausalLM.generate on GLA-1.3B (bf16, the same random weights) at the speed-run prompts."""
    if dev.type != "cuda":
        return
    for L in lengths:
        if not need(60, f"speed.gla.L{L}.anchor"):
            continue
        ours = _gla_model(GLA_13B, dev, torch.bfloat16)
        if ("gla", L) not in SPEED_INPUTS:  # run alone (without speed_gla): the same prompts, ours timed here
            SPEED_INPUTS[("gla", L)] = speed_prompts(family_config("gla", smoke)[1], 32, L, dev)
            t, SPEED_TOKENS[("gla", L, "bfloat16")] = bench_ours(ours, *SPEED_INPUTS[("gla", L)], 48, reps=2)
            record(f"speed.gla.L{L}.ours_bfloat16_s_per_batch", round(t, 3), f"{32 / t:.1f} prompts/s")
        ids, mask = SPEED_INPUTS[("gla", L)]
        _anchor("gla", GLA_13B, ours, ids, mask, 48, L, SPEED_TOKENS.get(("gla", L, "bfloat16"), []), dev)
        del ours


@section("agree_gla")
def check_agree_gla(dev, smoke, L=950):
    """Greedy agreement of GLA-1.3B in bf16 with an fp32 run of the same weights (rounded to bf16 as published, so
    both runs see the same values), for ours and for fla's own ``GLAForCausalLM``: fla's bf16 against its own fp32
    says what the issue's >= 99% asks of any bf16 implementation on these random weights. Also the first new
    token's logits: max error of each bf16 run against its fp32 run, ours fp32 against fla's fp32, and the
    top-1 / top-2 gaps of the fp32 logits (how close to ties the weights are)."""
    B, NEW = (4, 6) if smoke else (32, 48)
    L = 40 if smoke else L
    cfg, vocab = family_config("gla", smoke)
    ids, mask = speed_prompts(vocab, B, L, dev)
    toks, first = {}, {}
    dtypes = (torch.float32, torch.bfloat16) if dev.type == "cuda" else (torch.float32,)
    for dt in dtypes:
        if not need(60, f"agree.gla.ours.{dt}"):
            return
        m = _gla_model(cfg, dev, dt)
        with torch.inference_mode():
            first[("ours", dt)] = m.prefill(ids, mask)[0].float()
        _, toks[("ours", dt)] = bench_ours(m, ids, mask, NEW, reps=1)
        del m
    try:
        if dev.type != "cuda":
            raise RuntimeError("fla's models run on CUDA only")
        from fla.models import GLAForCausalLM  # noqa: F401
    except Exception as exc:
        record("agree.gla.fla", f"not run ({type(exc).__name__}: {exc})")
    else:
        sd = _gla_weights(cfg, dev)
        for dt in dtypes:
            if not need(90, f"agree.gla.fla.{dt}"):
                break
            hf = _fla_gla(cfg, sd, dev, dt)
            with torch.inference_mode():
                first[("fla", dt)] = hf(input_ids=ids, attention_mask=mask).logits[:, -1].float()
            _, toks[("fla", dt)], _ = bench_hf_generate(hf, ids, mask, NEW, reps=1)
            del hf
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    f32, b16 = torch.float32, torch.bfloat16
    pairs = [("ours_bf16_vs_ours_fp32", ("ours", b16), ("ours", f32)),
             ("fla_bf16_vs_fla_fp32", ("fla", b16), ("fla", f32)),
             ("ours_fp32_vs_fla_fp32", ("ours", f32), ("fla", f32)),
             ("ours_bf16_vs_fla_bf16", ("ours", b16), ("fla", b16)),
             ("ours_bf16_vs_fla_fp32", ("ours", b16), ("fla", f32))]
    for name, a, b in pairs:
        if a in toks and b in toks:
            record(f"agree.gla.L{L}.{name}", agreement(toks[a], toks[b]),
                   f"share of {B} rows with identical {NEW} tokens; {divergence(toks[a], toks[b])}")
        if a in first and b in first:
            record(f"agree.gla.L{L}.first_logits.{name}.max_abs", round((first[a] - first[b]).abs().max().item(), 4))
    if ("ours", f32) in first:
        top2 = first[("ours", f32)].topk(2, dim=-1).values
        gap = (top2[:, 0] - top2[:, 1]).sort().values
        record(f"agree.gla.L{L}.fp32_top1_top2_logit_gap", f"median {gap.median().item():.3f}",
               f"min {gap[0].item():.4f}")


@section("profile")
def check_profile(dev, smoke, families=("mamba2", "mamba")):
    """Where a batch's time goes: prefill alone vs the whole generate, and the top CUDA kernels and CPU ops of one
    generate, per family, default kernels (and mamba2's PyTorch SSD path). Tables go to the JSON under
    ``profile.*``."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    B, L, NEW = (4, 40, 6) if smoke else (32, 1900, 48)
    dt = torch.float32 if dev.type != "cuda" else torch.bfloat16
    for family in families:
        cfg, vocab = family_config(family, smoke)
        for kern in (("auto", "torch") if family == "mamba2" and dev.type == "cuda" else ("auto",)):
            if not need(40, f"profile.{family}.{kern}"):
                continue
            model = (_gla_model(cfg, dev, dt) if family == "gla" else _mamba_model(family, cfg, dev, dt, kernels=kern))
            ids, _ = speed_prompts(vocab, B, L, dev)
            t_pre, _ = timed(lambda m=model: m.prefill(ids), reps=2, warmup=1)
            t_gen, _ = bench_ours(model, ids, None, NEW, reps=1)
            record(f"profile.{family}.{kern}.prefill_s", round(t_pre, 4), f"of generate {t_gen:.3f} s "
                   f"({NEW} tokens): decode ~{(t_gen - t_pre) / NEW * 1e3:.2f} ms/step")
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
            with torch_profile(activities=acts) as prof:
                greedy_generate(model, ids, None, NEW)
                sync()
            key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"  # kernels, not op trees
            table = prof.key_averages().table(sort_by=key, row_limit=24, max_name_column_width=70)
            RESULTS.setdefault("profile_tables", {})[f"{family}.{kern}"] = table
            log(table)
            del model
            if dev.type == "cuda":
                torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--smoke", action="store_true", help="CPU, toy sizes")
    ap.add_argument("--only", default="", help="comma list of sections to run (default: all)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip; 'anchors' skips the anchors, "
                    "'torch_ssd' Mamba-2's PyTorch-SSD comparison")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--profile", default="mamba2,mamba", help="families of the profile section (mamba, mamba2, gla)")
    ap.add_argument("--deadline", type=float, default=540, help="seconds; later steps are skipped (JSON still written)")
    args = ap.parse_args()
    OUT_DIR[0] = Path(args.out)
    OUT_DIR[0].mkdir(parents=True, exist_ok=True)
    LOG_FILE[0] = OUT_DIR[0] / "log.txt"
    DEADLINE[0] = args.deadline
    dev = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(",")))
    info = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}
    for pkg in ("triton", "transformers", "fla"):
        try:
            info[pkg] = __import__(pkg).__version__
        except Exception as exc:
            info[pkg] = f"absent ({type(exc).__name__})"
    RESULTS["env"] = info
    log(json.dumps(info))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    anchors = "anchors" not in skip
    plan = [  # most important first: a lease that runs out still brings back the rest
        ("kernels", lambda: check_kernels(dev, args.smoke)),
        ("speed_mamba", lambda: check_speed_mamba(dev, args.smoke, anchors, args.reps)),
        ("speed_mamba2", lambda: check_speed_mamba2(dev, args.smoke, anchors, args.reps, skip)),
        ("parity_mamba", lambda: check_parity_mamba(dev, args.smoke)),
        ("speed_gla", lambda: check_speed_gla(dev, args.smoke, anchors, args.reps)),
        ("parity_gla", lambda: check_parity_gla(dev, args.smoke)),
        ("fla_kernels", lambda: check_fla_kernels(dev, args.smoke)),
        ("anchor_gla", lambda: check_anchor_gla(dev, args.smoke) if anchors else None),
        ("agree_gla", lambda: check_agree_gla(dev, args.smoke)),
        ("profile", lambda: check_profile(dev, args.smoke, tuple(args.profile.split(",")))),
    ]
    for name, fn in plan:
        if name in skip or (only and name not in only):
            continue
        if time_left() < 20:
            record(f"skipped.{name}", "deadline")
            continue
        fn()
    save()
    log("\n================ summary")
    for key, val, note in SUMMARY:
        log(f"{key:60s} {val} {note}")


if __name__ == "__main__":
    main()
