"""GLA-1.3B decode step with the packed projections (one matmul for q / k / v / g / gate rank, one for the MLP's
gate / up) against the separate matmuls, same model, same run.

    python benchmarks/gla_decode_pack.py            # batch 32, bf16, CUDA-graph decode, random weights
    python benchmarks/gla_decode_pack.py --smoke    # CPU, toy widths (the code path, for CI)

The prefill is our PyTorch path on a short prompt (no fla: nothing to autotune), then 48 greedy decode steps are
timed per variant; the separate-matmul variant is the same model with its packing marked stale, which runs the
code of before the packing (five + two matmuls, PyTorch's SiLU and product). Prints ms per step and the
greedy-token agreement of the two variants.

H100, 2026-11-23 (``gpu_pending.sh 12``, results/gpu/gla_decode_pack_h100.txt): packed 3.153 ms per step, separate
3.696 (1.17x). (A first run, whose separate variant still concatenated the gate / up outputs, had timed 5.58 ms.)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None):
    import argparse

    from jrt_eval.model_adapters.base import greedy_generate
    from gpu_check_ssm import _gla_model, family_config, speed_prompts, sync

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, toy widths: the code path only (CI)")
    args = ap.parse_args(argv)
    dev = torch.device("cpu" if args.smoke else "cuda")
    cfg, vocab = family_config("gla", args.smoke)
    batch, steps = (4, 6) if args.smoke else (32, 48)
    # our PyTorch prefill (no fla: nothing to autotune) and, on CUDA, the Triton decode step
    model = _gla_model(cfg, dev, torch.float32 if args.smoke else torch.bfloat16,
                       kernels="torch" if args.smoke else "triton")
    ids, _ = speed_prompts(vocab, batch, 64, dev)
    res = {}
    for name in ("packed", "separate"):
        if name == "separate":  # the packing marked stale: the code of before it runs
            for blk in model.model.layers:
                for owner, _ in model._packs(blk):
                    owner.__dict__.pop("_packed", None)
            model.release_graphs()
        greedy_generate(model, ids, None, 8)  # warm-up: compile, capture
        sync()
        times = []
        for n in (1, steps + 1):  # decode time = the difference (the prefill cancels)
            t = time.perf_counter()
            out = greedy_generate(model, ids, None, n)
            sync()
            times.append(time.perf_counter() - t)
        res[name] = ((times[1] - times[0]) / steps * 1e3, out.tokens)
        # "graphs held" says whether the steps were replayed from a CUDA graph
        print(f"{name:9s} decode {res[name][0]:.3f} ms/step (batch {batch}, {next(model.parameters()).dtype}, "
              f"{'toy' if args.smoke else 'GLA-1.3B'} widths, cuda_graphs={model.cuda_graphs}, "
              f"graphs held {len(model._graphs)})", flush=True)
    same = sum(a == b for a, b in zip(res["packed"][1], res["separate"][1])) / len(res["packed"][1])
    print(f"packed / separate: {res['separate'][0] / res['packed'][0]:.2f}x faster; greedy tokens identical on "
          f"{same:.0%} of rows")


if __name__ == "__main__":
    main()
