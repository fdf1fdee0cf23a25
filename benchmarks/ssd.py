"""Mamba-2 SSD prefill kernel: tile configs of ``ssd_prefill_triton`` against the PyTorch chunked SSD.

    python benchmarks/ssd.py                   # Mamba-2-130M widths (24 heads of 64, d_state 128), batch 32 x 1900
    python benchmarks/ssd.py --B 8 --T 8192    # other shapes

The old default (chunks of 32, whole head per program, 8 warps) ran 1.73 ms per layer on an H100 at batch
32 x 1900 = ~38 TFLOP/s: one 220-register program per SM walking 60 chunks in sequence, i.e. latency-bound.
Half-head programs on one warpgroup (two per SM) ran 1.10 ms and are the default for 16-bit inputs since
2026-11-23; capped at 168 registers (three per SM, ``ssd_triton.register_cap``) 1.00 ms (benchmarks/README.md).
This times the alternatives around it, with every output checked against ``scan.ssd_chunked`` in float32 first.
The fastest config can be set with ``JRT_EVAL_SSD_CONFIG`` and then made the default in
``ssd_triton._default_config``; ``--breakdown`` adds each launched kernel's time (torch.profiler).
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

CONFIGS = [
    {},  # the default (16-bit: BT 32, BLOCK_P 32, 4 warps, 2 stages)
    {"BLOCK_P": 64, "num_warps": 8},  # the old default
    # register caps (the default caps at 168 when the programs outnumber two per SM; 0 = no cap)
    {"maxnreg": 0}, {"maxnreg": 168, "num_stages": 3}, {"maxnreg": 128, "BT": 16},
]


def main(argv=None):
    import triton

    from jrt_eval.kernels.mamba import ssd_triton
    from jrt_eval.kernels.mamba.scan import ssd_chunked

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=1900)
    ap.add_argument("--configs", default=None, help="JSON list of config overrides (default: the list above)")
    ap.add_argument("--breakdown", action="store_true", help="also each kernel's share (torch.profiler, 10 calls)")
    ap.add_argument("--best-out", default=None, help="write the fastest config (TF32 mix, error < 1e-2) here as JSON")
    args = ap.parse_args(argv)
    b, T, h, p, n = args.B, args.T, 24, 64, 128
    g = torch.Generator(device="cuda").manual_seed(0)
    rn = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    x, dt = rn(b, T, h, p).bfloat16(), (rn(b, T, h) - 1).bfloat16()
    B, C = rn(b, T, 1, n).bfloat16(), rn(b, T, 1, n).bfloat16()
    A, D, dt_bias = -torch.rand(h, device="cuda", generator=g) * 4 - 0.5, rn(h), rn(h) * 0.5
    k = min(b, 2)  # the float32 reference on a slice of the batch
    want, want_s = ssd_chunked(x[:k].float(), dt[:k].float(), A, B[:k].float(), C[:k].float(), 256, D=D,
                               dt_bias=dt_bias)
    torch_ms = triton.testing.do_bench(lambda: ssd_chunked(x, dt, A, B, C, 256, D=D, dt_bias=dt_bias),
                                       warmup=5, rep=100, return_mode="median")
    print(f"device {torch.cuda.get_device_name()} | triton {triton.__version__} | [{b}, {T}, {h}, {p}] "
          f"d_state {n} bf16")
    print(f"  torch ssd_chunked: {torch_ms:.3f} ms")
    flops = 2 * b * T * h * (32 * n + 32 * p + 2 * p * n)  # per token: C·B over the chunk, the mix, C S and the update
    best = None
    for cfg in json.loads(args.configs) if args.configs else CONFIGS:
        try:
            y, s = ssd_triton.ssd_prefill_triton(x, dt, A, B, C, D=D, dt_bias=dt_bias, out_dtype=torch.float32,
                                                 config=cfg)
            err = max(((y[:k] - want).norm() / want.norm()).item(), ((s[:k] - want_s).norm() / want_s.norm()).item())
            ms = triton.testing.do_bench(lambda: ssd_triton.ssd_prefill_triton(
                x, dt, A, B, C, D=D, dt_bias=dt_bias, out_dtype=torch.float32, config=cfg),
                warmup=5, rep=100, return_mode="median")
        except Exception as exc:  # a config that does not compile or fit: say so, go on
            print(f"  {json.dumps(cfg) or 'default'}: failed {type(exc).__name__}: {str(exc)[:200]}")
            continue
        k_ = ssd_triton.LAST_KERNEL
        regs = f"regs {k_.n_regs} spills {k_.n_spills}" if k_ is not None and hasattr(k_, "n_regs") else ""
        if args.breakdown:
            regs += " | " + breakdown(lambda: ssd_triton.ssd_prefill_triton(
                x, dt, A, B, C, D=D, dt_bias=dt_bias, out_dtype=torch.float32, config=cfg))
        print(f"  {json.dumps(cfg) if cfg else 'default':45s} {ms:.3f} ms = {torch_ms / ms:.1f}x torch, "
              f"{flops / ms / 1e9:.0f} TFLOP/s, err {err:.1e} {regs}")
        if err < 1e-2 and cfg.get("mix", "tf32") == "tf32" and (best is None or ms < best[0]):
            best = (ms, cfg)
    if args.best_out and best is not None:
        Path(args.best_out).write_text(json.dumps(best[1]) + "\n")
        print(f"  fastest: {json.dumps(best[1]) or 'default'} {best[0]:.3f} ms -> {args.best_out}")


def breakdown(fn, calls=10) -> str:
    """Mean CUDA time per call of each kernel ``fn`` launches (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    times = {}
    for ev in prof.key_averages():
        if ev.device_type.name == "CUDA" or getattr(ev, "self_device_time_total", 0):
            times[ev.key] = getattr(ev, "self_device_time_total", 0) / calls / 1e3
    return ", ".join(f"{k} {v:.3f} ms" for k, v in sorted(times.items(), key=lambda kv: -kv[1]) if v > 0.001)


if __name__ == "__main__":
    main()
