"""Where a JRT-RNN prefill (PLA) spends its time: its two launches timed apart, in one run.

    python benchmarks/pla_parts.py [--N 32768] [--B 16]
    python benchmarks/pla_parts.py --tune      # the two launches under a grid of tile configs

PLA = the state-only pass over the encoder's keys (k_e, v_e, enc_mask) + the causal Based pass over (q, k, v)
that starts from that state (kernels/based/triton_pla.py). Rows: the state pass without a mask, with an all-true
mask (what the benchmark's M = N passes), with a half-length prefix, each mask read or given as a range
(``mask_is_range``), and the ``key_range`` launch that a range costs; the Based pass with and without an initial
state, and with a left-padding mask read or as a range; the whole PLA with masks read, and as ranges (what the
adapters and the benchmark pass). Medians of ``triton.testing.do_bench`` (bf16, H = 16, dv = 64).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, default=32768)
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--tune", action="store_true",
                    help="instead: the Based pass from the encoder state (and from zeros) and the state pass over a "
                         "range, under a grid of tile configs")
    ap.add_argument("--deadline", type=float, default=480.0, help="--tune: stop starting configs after this many s")
    args = ap.parse_args(argv)

    from jrt_eval.kernels.based.triton_pla import pla_prefill_triton
    from jrt_eval.kernels.based.triton_prefill import based_prefill_triton, key_range, state_from_keys_triton

    B, N, H, F, DV = args.B, args.N, 16, 16, 64
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, ke = (torch.randn(B, N, H, F, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    v, ve = (torch.randn(B, N, H, DV, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    full = torch.ones(B, N, dtype=torch.bool, device="cuda")
    half = (torch.arange(N, device="cuda") < N // 2).expand(B, N).contiguous()
    pad = (torch.arange(N, device="cuda")[None, :] >= torch.arange(B, device="cuda")[:, None] * 64).contiguous()
    enc = state_from_keys_triton(ke, ve, full)

    if args.tune:
        return tune(q, k, v, ke, ve, full, enc, args.deadline)
    rows = [
        ("state pass, no mask", lambda: state_from_keys_triton(ke, ve)),
        ("state pass, all-true mask", lambda: state_from_keys_triton(ke, ve, full)),
        ("state pass, prefix mask M = N/2", lambda: state_from_keys_triton(ke, ve, half)),
        ("state pass, all-true mask as a range", lambda: state_from_keys_triton(ke, ve, full, mask_is_range=True)),
        ("key ranges of a mask (mask_is_range's host side)", lambda: key_range(full)),
        ("state pass, prefix M = N/2 as a range", lambda: state_from_keys_triton(ke, ve, half, mask_is_range=True)),
        ("Based pass at N", lambda: based_prefill_triton(q, k, v, output_final_state=True)),
        ("Based pass at N from the encoder state", lambda: based_prefill_triton(q, k, v, initial_state=enc,
                                                                               output_final_state=True)),
        ("Based pass at N, left-padding mask read", lambda: based_prefill_triton(q, k, v, key_mask=pad,
                                                                                 output_final_state=True)),
        ("Based pass at N, left-padding mask as a range", lambda: based_prefill_triton(
            q, k, v, key_mask=pad, output_final_state=True, mask_is_range=True)),
        ("PLA (M = N)", lambda: pla_prefill_triton(q, k, v, ke, ve, full, output_final_state=True)),
        ("PLA (M = N), masks as ranges", lambda: pla_prefill_triton(
            q, k, v, ke, ve, full, output_final_state=True, masks_are_ranges=True)),
    ]
    print(f"B={B} N={N} H={H} dv={DV} bf16 ({torch.cuda.get_device_name()})")
    for name, fn in rows:
        print(f"  {name:<52} {median_ms(fn):8.3f} ms", flush=True)


def median_ms(fn) -> float:
    """Median of ``triton.testing.do_bench`` after one untimed call (compilation)."""
    import triton

    fn()
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


TUNE_PASS = [{}, {"num_stages": 2}, {"num_stages": 4}, {"tma": "loads"}, {"BLOCK_DV": 32},
             {"BLOCK_DV": 32, "num_stages": 4}, {"BT": 32}, {"num_warps": 8}, {"kt": False}, {"sel16": False},
             {"maxnreg": 240}]
TUNE_STATE = [{}, {"num_stages": 2}, {"num_stages": 4}, {"BT": 64}, {"BT": 256}, {"BLOCK_DV": 32}]


def tune(q, k, v, ke, ve, full, enc, deadline):
    """Each config's median, printed as it goes (configs over the prefill's / state pass's defaults)."""
    import time

    from jrt_eval.kernels.based.triton_prefill import based_prefill_triton, state_from_keys_triton

    t0 = time.time()
    runs = [(f"Based pass from the encoder state {c}", lambda c=c: based_prefill_triton(
        q, k, v, initial_state=enc, output_final_state=True, config=c)) for c in TUNE_PASS]
    runs += [(f"Based pass from zeros {c}", lambda c=c: based_prefill_triton(
        q, k, v, output_final_state=True, config=c)) for c in TUNE_PASS]
    runs += [(f"state pass, all-true mask as a range {c}", lambda c=c: state_from_keys_triton(
        ke, ve, full, mask_is_range=True, config=c)) for c in TUNE_STATE]
    for name, fn in runs:
        if time.time() - t0 > deadline:
            print(f"  (deadline: {name} and later not run)", flush=True)
            break
        try:
            print(f"  {name:<72} {median_ms(fn):8.3f} ms", flush=True)
        except Exception as e:  # a config that does not compile / fit: say so, go on
            print(f"  {name:<72} failed: {type(e).__name__}: {str(e)[:120]}", flush=True)


if __name__ == "__main__":
    main()
