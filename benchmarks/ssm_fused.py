"""The small fused SSM kernels against their PyTorch paths: the causal conv (Mamba / Mamba-2, 4 taps + SiLU) and
the gated RMSNorm (Mamba-2 gate-first, GLA norm-first per head, and the plain block RMSNorm), and the residual add
fused with the block RMSNorm.

    python benchmarks/ssm_fused.py             # Mamba-2-130M / Mamba-130M / GLA-1.3B widths, batch 32 x 1900 tokens
    python benchmarks/ssm_fused.py --tune      # also a few tile configs of the conv prefill kernel

Prefill: ``causal_conv1d_triton`` (reads the in_proj output slice in place, mask + bias + SiLU fused) against
``causal_conv1d_torch`` (mask multiply, ``F.conv1d`` in the channels-first layout, transposes, SiLU), bf16,
left-padded mask. Decode: ``conv_step_triton`` against ``conv_step_torch`` at batch 32, also under CUDA-graph
replay (``do_bench_cudagraph``, as the adapters replay it). Norms: ``gated_rms_norm_triton`` against
``gated_rms_norm_torch`` in the three forms the adapters use, prefill rows and decode rows. Every output is checked
against a float64 PyTorch result first. Prints ms, ratios vs the PyTorch path, and achieved bandwidth (bytes read
and written once).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from common import rel_err  # benchmarks/common.py (the scripts' folder is on the path)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHAPES = {  # name: (in_proj width, conv slice start, conv channels)
    "mamba2-130m": (3352, 1536, 1792),
    "mamba-130m": (3072, 0, 1536),
}
TUNE = [dict(BT=16, BC=128, num_warps=4), dict(BT=16, BC=256, num_warps=8), dict(BT=8, BC=256, num_warps=4),
        dict(BT=32, BC=128, num_warps=8), dict(BT=64, BC=128, num_warps=8), dict(BT=32, BC=64, num_warps=4)]


def main(argv=None):
    import triton

    from jrt_eval.kernels.mamba import reference as R
    from jrt_eval.kernels.mamba.conv_triton import causal_conv1d_triton, conv_step_triton
    from jrt_eval.kernels.mamba.scan import causal_conv1d_torch, conv_step_torch, conv_tail

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=1900)
    ap.add_argument("--tune", action="store_true")
    args = ap.parse_args(argv)
    bench = lambda fn: triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")  # noqa: E731
    dev, dt, B, T = "cuda", torch.bfloat16, args.B, args.T
    print(f"device {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__}")
    for name, (width, start, C) in SHAPES.items():
        g = torch.Generator(device=dev).manual_seed(0)
        proj = torch.randn(B, T, width, device=dev, generator=g).to(dt)
        x = proj[..., start:start + C]
        w = (torch.randn(C, 4, device=dev, generator=g) * 0.5).to(dt)
        bias = torch.randn(C, device=dev, generator=g).to(dt)
        mask = torch.ones(B, T, dtype=torch.long, device=dev)
        for i in range(B):
            mask[i, : (i * T) // (2 * B)] = 0  # left padding, up to half the row
        want = R.causal_conv1d_ref(x[:2].double(), w.double(), bias.double(), mask=mask[:2])
        t_ref = bench(lambda: causal_conv1d_torch(x, w, bias, mask=mask))
        gbytes = 2 * B * T * C * x.element_size() / 1e9
        print(f"== {name}: prefill conv [{B}, {T}, {C}] bf16 (slice of a {width}-wide projection), mask, SiLU")
        e_ref = rel_err(causal_conv1d_torch(x[:2], w, bias, mask=mask[:2]), want)
        print(f"  torch (F.conv1d path)      {t_ref:.3f} ms  err {e_ref:.1e}")
        for cfg in (TUNE if args.tune else TUNE[:1]):
            y = causal_conv1d_triton(x, w, bias, mask=mask, config=cfg)
            t = bench(lambda: causal_conv1d_triton(x, w, bias, mask=mask, config=cfg))
            print(f"  triton {cfg}  {t:.3f} ms = {t_ref / t:.1f}x torch, {gbytes / t:.2f} TB/s  "
                  f"err {rel_err(y[:2], want):.1e}")
        # decode step, batch B: state [B, C, 3] in the model dtype, x a row of the projection
        xs = proj[:, -1, start:start + C]
        st0 = conv_tail(x[:, :-1], 4)
        want_s = R.causal_conv1d_ref(x[:, -4:].double(), w.double(), bias.double())[:, -1]
        outs = {}
        for label, fn in (("torch", conv_step_torch), ("triton", conv_step_triton)):
            st = st0.clone()
            outs[label] = rel_err(fn(st, xs, w, bias, out_dtype=torch.float32), want_s)
            st = st0.clone()
            t_e = bench(lambda: fn(st, xs, w, bias))
            t_g = triton.testing.do_bench_cudagraph(lambda: fn(st, xs, w, bias), rep=200, return_mode="median")
            outs[label + "_t"] = (t_e, t_g)
        (te, tg), (ue, ug) = outs["torch_t"], outs["triton_t"]
        print(f"  step B={B}: torch {te * 1e3:.1f} us eager / {tg * 1e3:.1f} us graphed (err {outs['torch']:.1e}); "
              f"triton {ue * 1e3:.1f} / {ug * 1e3:.1f} us (err {outs['triton']:.1e}) = {tg / ug:.1f}x graphed")
    norms(B, T, bench)


NORMS = {  # name: (channels, groups, weight per channel, norm first, gated, y dtype, z/width of its projection)
    "mamba2-130m gate-first": (1536, 1, True, False, True, torch.float32, 3352),
    "gla-1.3b per-head norm-first": (2048, 4, False, True, True, torch.bfloat16, 2048),
    "block rms_norm (fp32 residual)": (768, 1, True, True, False, torch.float32, None),
}


def norms(B, T, bench):
    from jrt_eval.kernels.mamba.norm_triton import gated_rms_norm_triton
    from jrt_eval.kernels.mamba.scan import gated_rms_norm_torch

    import triton

    g = torch.Generator(device="cuda").manual_seed(1)
    for name, (d, groups, per_channel, norm_first, gated, ydt, width) in NORMS.items():
        for rows, label in (((B, T), "prefill"), ((B,), "decode")):
            y = torch.randn(*rows, d, device="cuda", generator=g).to(ydt)
            z = torch.randn(*rows, width, device="cuda", generator=g).bfloat16()[..., :d] if gated else None
            w = torch.randn(d if per_channel else d // groups, device="cuda", generator=g).bfloat16()
            args = (y, z, w, 1e-5, groups, torch.bfloat16, norm_first)
            want = gated_rms_norm_torch(y.double(), None if z is None else z.double(), w.double(), 1e-5, groups,
                                        torch.float64, norm_first)
            e_t = rel_err(gated_rms_norm_torch(*args), want)
            e_k = rel_err(gated_rms_norm_triton(*args), want)
            if label == "prefill":
                t_t, t_k = bench(lambda: gated_rms_norm_torch(*args)), bench(lambda: gated_rms_norm_triton(*args))
            else:
                graphed = triton.testing.do_bench_cudagraph
                t_t = graphed(lambda: gated_rms_norm_torch(*args), rep=200, return_mode="median")
                t_k = graphed(lambda: gated_rms_norm_triton(*args), rep=200, return_mode="median")
            nbytes = y.numel() * (y.element_size() + 2 + (2 if gated else 0))
            print(f"== norm {name} {label} {list(y.shape)}: torch {t_t * 1e3:.1f} us (err {e_t:.1e}), triton "
                  f"{t_k * 1e3:.1f} us (err {e_k:.1e}) = {t_t / t_k:.1f}x, {nbytes / t_k / 1e9:.2f} TB/s")
    add_norm(B, T, bench)


def add_norm(B, T, bench):
    """The seam between pre-norm blocks: fp32 residual + bf16 block output, then the next block's RMSNorm (bf16
    out), as two PyTorch steps vs one Triton pass (norm_triton.add_rms_norm_triton)."""
    import triton

    from jrt_eval.kernels.mamba.norm_triton import add_rms_norm_triton
    from jrt_eval.model_adapters.ssm_common import rms_norm

    def torch_path(resid, delta, w):
        resid = resid + delta
        return resid, rms_norm(resid, w, 1e-5, torch.bfloat16)

    g = torch.Generator(device="cuda").manual_seed(2)
    for d in (768, 2048):
        for rows, label in (((B, T), "prefill"), ((B,), "decode")):
            resid = torch.randn(*rows, d, device="cuda", generator=g)
            delta = torch.randn(*rows, d, device="cuda", generator=g).bfloat16()
            w = torch.randn(d, device="cuda", generator=g).bfloat16()
            want_r, want_h = torch_path(resid.double(), delta.double(), w.double())
            r, h = add_rms_norm_triton(resid, delta, w, 1e-5, torch.bfloat16)
            errs = f"err resid {rel_err(r, want_r):.1e} norm {rel_err(h, want_h):.1e}"
            if label == "prefill":
                t_t = bench(lambda: torch_path(resid, delta, w))
                t_k = bench(lambda: add_rms_norm_triton(resid, delta, w, 1e-5, torch.bfloat16))
            else:
                t_t = triton.testing.do_bench_cudagraph(lambda: torch_path(resid, delta, w), rep=200,
                                                        return_mode="median")
                t_k = triton.testing.do_bench_cudagraph(
                    lambda: add_rms_norm_triton(resid, delta, w, 1e-5, torch.bfloat16), rep=200, return_mode="median")
            print(f"== add + rms_norm d={d} {label} {list(resid.shape)}: torch {t_t * 1e3:.1f} us, triton "
                  f"{t_k * 1e3:.1f} us = {t_t / t_k:.1f}x ({errs})")


if __name__ == "__main__":
    main()
