"""Decode projections (a few rows times a weight) with ``skinny_matmul.skinny_linear`` against cuBLAS (``F.linear``).

    python benchmarks/skinny_matmul.py            # Mamba-2-130M / Mamba-130M / Based-360M / GLA-1.3B decode shapes, batch 32
    python benchmarks/skinny_matmul.py --tune     # also a few tile configs

Timed under CUDA-graph replay (``do_bench_cudagraph``), as the adapters' decode step runs, so launch overhead
counts as it does there. Each output is checked against ``F.linear`` in float32 first. Prints µs, the ratio
against cuBLAS, and the weight-read bandwidth.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from common import rel_err  # benchmarks/common.py

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHAPES = {  # name: (K in, N out)
    "mamba2-130m.in_proj": (768, 3352), "mamba2-130m.out_proj": (1536, 768),
    "mamba-130m.in_proj": (768, 3072), "mamba-130m.out_proj": (1536, 768),
    "based-360m.mlp_fc1": (1024, 4096), "gla-1.3b.q_proj": (2048, 1024), "gla-1.3b.down_proj": (5632, 2048),
}
TUNE = [dict(BLOCK_N=32, BLOCK_K=128), dict(BLOCK_N=16, BLOCK_K=256), dict(BLOCK_N=16, BLOCK_K=64),
        dict(BLOCK_N=16, BLOCK_K=128, num_stages=6), dict(BLOCK_N=32, BLOCK_K=64, num_stages=6),
        dict(BLOCK_N=16, BLOCK_K=128, num_warps=2), dict(BLOCK_N=64, BLOCK_K=64, num_warps=4)]


def main(argv=None):
    import triton

    from jrt_eval.kernels.mamba.skinny_matmul import DEFAULT, skinny_linear

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[32])
    ap.add_argument("--tune", action="store_true")
    args = ap.parse_args(argv)
    print(f"device {torch.cuda.get_device_name()} | triton {triton.__version__} | bf16, CUDA-graph replay")
    g = torch.Generator(device="cuda").manual_seed(0)
    for rows in args.rows:
        for name, (K, N) in SHAPES.items():
            x = torch.randn(rows, K, device="cuda", generator=g).bfloat16()
            w = (torch.randn(N, K, device="cuda", generator=g) / K ** 0.5).bfloat16()
            ref = (x.float() @ w.float().t())
            t_cublas = triton.testing.do_bench_cudagraph(lambda: torch.nn.functional.linear(x, w)) * 1e3
            line = f"  rows {rows:3d} {name:24s} cuBLAS {t_cublas:6.2f} µs"
            for cfg in [{}] + (TUNE if args.tune else []):
                y = skinny_linear(x, w, config=cfg)
                err = rel_err(y, ref)
                t = triton.testing.do_bench_cudagraph(lambda: skinny_linear(x, w, config=cfg)) * 1e3
                tag = json.dumps(cfg) if cfg else f"default {json.dumps(DEFAULT)}"
                line += f"\n      {tag:60s} {t:6.2f} µs = {t_cublas / t:4.2f}x cuBLAS, {N * K * 2 / t / 1e6:5.2f} TB/s, err {err:.1e}"
            print(line)


if __name__ == "__main__":
    main()
