"""GLA-1.3B decode step with the packed projections (one matmul for q / k / v / g / gate rank, one for the MLP's
gate / up) against the separate matmuls, same model, same run.

    python benchmarks/gla_decode_pack.py            # batch 32, bf16, CUDA-graph decode, random weights

The prefill is our PyTorch path on a short prompt (no fla: nothing to autotune), then 48 greedy decode steps are
timed per variant; the separate-matmul variant is the same model with its packing marked stale, which runs the
code of before the packing (five + two matmuls, PyTorch's SiLU and product). Prints ms per step and the
greedy-token agreement of the two variants.

First run (H100, 2026-11-23, commit of this script): packed 3.21 ms per step; the separate variant then still
concatenated the gate / up outputs (an extra copy, since removed) and ran 5.58 ms, so that ratio is not the gain;
the profile of the code before the packing (same day) gave ~3.44 ms per step. To be rerun.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main():
    from jrt_eval.model_adapters import gla
    from jrt_eval.model_adapters.base import greedy_generate
    from gpu_check_ssm import GLA_13B

    spec = gla.parse_config(GLA_13B)
    model = gla.build_model(spec, GLA_13B, device="meta", kernels="triton")  # torch prefill, Triton decode step
    model.load_state_dict(gla.random_gla_weights(spec, 0, "cuda"), strict=True, assign=True)
    model = model.to("cuda", torch.bfloat16).eval()
    ids = torch.randint(0, 32000, (32, 64), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    res = {}
    for name in ("packed", "separate"):
        if name == "separate":
            for blk in model.model.layers:
                for owner, _ in model._packs(blk):
                    owner.__dict__.pop("_packed", None)
            model.release_graphs()
        greedy_generate(model, ids, None, 8)  # warm-up: compile, capture
        torch.cuda.synchronize()
        times = []
        for n in (1, 49):  # decode time = the difference (the prefill cancels)
            t = time.perf_counter()
            out = greedy_generate(model, ids, None, n)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        res[name] = ((times[1] - times[0]) / 48 * 1e3, out.tokens)
        print(f"{name:9s} decode {res[name][0]:.3f} ms/step (batch 32, bf16, GLA-1.3B widths)", flush=True)
    same = sum(a == b for a, b in zip(res["packed"][1], res["separate"][1])) / len(res["packed"][1])
    print(f"packed / separate: {res['separate'][0] / res['packed'][0]:.2f}x faster; greedy tokens identical on "
          f"{same:.0%} of rows")


if __name__ == "__main__":
    main()
