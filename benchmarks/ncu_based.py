"""Driver for Nsight Compute profiles of the fused Based kernels (no timing of its own).

    ncu --clock-control none -k regex:_based_chunk_kernel --launch-skip 1 --launch-count 1 --set full \
        -o based python3 benchmarks/ncu_based.py --what prefill

``--what prefill``: the JRT-Prompt headline launch (Based at 2N = 65536, B = 16, H = 16, bf16, one program per
(batch, head), no segments); ``--what state``: the JRT-RNN encoder's state-only pass at N = 32768. Each launch runs
``--reps`` times so that ``--launch-skip`` can step over the first (compiling) call. ``--config`` overrides the
tile config (JSON), as ``JRT_EVAL_BASED_CONFIG`` does. ``benchmarks/gpu_pending.sh 16`` runs both profiles and
prints the stall breakdown (``ncu_stalls.py``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", choices=("prefill", "state"), default="prefill")
    ap.add_argument("--N", type=int, default=32768)
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--config", default=None, help="tile config overrides (JSON)")
    args = ap.parse_args(argv)

    from jrt_eval.kernels.based.triton_prefill import based_prefill_triton, state_from_keys_triton

    H, F, DV = 16, 16, 64
    T = 2 * args.N if args.what == "prefill" else args.N
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn(args.B, T, H, F, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    v = torch.randn(args.B, T, H, DV, device="cuda", dtype=torch.bfloat16, generator=g)
    cfg = json.loads(args.config) if args.config else None
    for _ in range(args.reps):
        if args.what == "prefill":
            based_prefill_triton(q, k, v, output_final_state=True, config=cfg)
        else:
            state_from_keys_triton(k, v, config=cfg)
    torch.cuda.synchronize()
    print(f"ran {args.what} x{args.reps}: B={args.B} T={T} H={H} dv={DV}")


if __name__ == "__main__":
    main()
