"""The greedy decode loop with and without host/GPU overlap (``greedy_generate(overlap=...)``), graphed and eager.

    python benchmarks/decode_loop.py                      # Based-360M widths, batch 32 x 950, 48 tokens, bf16
    python benchmarks/decode_loop.py --family attn --L 1900
    python benchmarks/decode_loop.py --smoke              # CPU, toy widths (the overlap is CUDA-only: same path)

On CUDA ``greedy_generate`` queues step t + 1 before the host reads step t's tokens (``model_adapters/base.py``).
This times the four combinations in one run, best of ``--reps`` after a warm-up each, and checks that the
tokens are identical across them. Random weights of the published widths (``gpu_check_hazy.build``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import gpu_check_hazy as hz  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="based", choices=["based", "jrt_rnn", "attn"])
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--L", type=int, default=950)
    ap.add_argument("--new", type=int, default=48)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    B, L, new = (2, 24, 4) if args.smoke else (args.B, args.L, args.new)
    model = hz.build(args.family, args.smoke, dev)
    ids = torch.randint(0, 50257, (B, L), generator=torch.Generator().manual_seed(L)).to(dev)
    print(f"{args.family} on {dev}: batch {B} x {L} tokens, {new} new, bf16 autocast on CUDA")
    res = {}
    for graphed in ((True, False) if dev.type == "cuda" else (False,)):
        for overlap in (False, True):
            t, toks = hz.timed_generate(model, ids, None, new, autocast=dev.type == "cuda", reps=args.reps,
                                        cuda_graphs=graphed, overlap=overlap)
            res[(graphed, overlap)] = (t, toks)
            print(f"  cuda_graphs={graphed!s:<5} overlap={overlap!s:<5} {t:.3f} s per batch "
                  f"({B / t:.1f} prompts/s)", flush=True)
        base, ovl = res[(graphed, False)], res[(graphed, True)]
        print(f"  cuda_graphs={graphed}: overlap {base[0] / ovl[0]:.2f}x the plain loop; "
              f"tokens identical: {base[1] == ovl[1]}")
    first = next(iter(res.values()))[1]
    assert all(toks == first for _, toks in res.values()), "decode loops disagree"


if __name__ == "__main__":
    main()
