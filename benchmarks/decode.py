"""Decode-step benchmark: one Based / JRT-RNN layer, one token per sequence, batch 1..256.

    python benchmarks/decode.py                  # B = 1 4 16 64 256, H = 16, f = 16, dv = 64
    python benchmarks/decode.py --B 256 --dv 112

Compares our fused step (``based_step`` → triton_decode.py: φ(q), φ(k), S += φ(k)vᵀ, z += φ(k),
readout, state updated in place) with the plain-PyTorch step (``reference.based_decode_step``) and
fla 0.6.0's ``fused_recurrent_linear_attn`` (T = 1, normalize=True, on 153-wide features that
PyTorch builds first; also timed on pre-built features, "kernel only"). Each output is checked
against a float64 step from the same state first. Times: median of ``triton.testing.do_bench`` and
of ``do_bench_cudagraph`` (graph replay, no launch overhead). Tokens/s per layer = B / time.
The floor is the fp32 state read + write, B·H·153·(dv+1)·4·2 bytes, at the measured copy bandwidth.
Writes ``results/bench_decode.csv`` (or --out).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

from common import rel_err  # benchmarks/common.py (the scripts' folder is on the path)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def copy_bandwidth(nbytes=2 << 30):
    import triton

    a = torch.empty(nbytes // 4, device="cuda", dtype=torch.float32).uniform_()
    b = torch.empty_like(a)
    ms = triton.testing.do_bench(lambda: b.copy_(a), warmup=25, rep=200, return_mode="median")
    return 2 * nbytes / ms / 1e9  # TB/s (read + write)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--B", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    ap.add_argument("--H", type=int, default=16)
    ap.add_argument("--dv", type=int, default=64)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_decode.csv"))
    args = ap.parse_args(argv)
    assert torch.cuda.is_available(), "the decode benchmark needs a CUDA GPU"
    import triton
    from triton.testing import do_bench, do_bench_cudagraph

    from jrt_eval.kernels.based import BasedState, based_step
    from jrt_eval.kernels.based import reference as R

    try:
        from fla.ops.linear_attn import fused_recurrent_linear_attn
    except Exception as e:  # pragma: no cover
        print(f"fla not importable: {e!r}")
        fused_recurrent_linear_attn = None

    dtype = getattr(torch, args.dtype)
    H, dv, D = args.H, args.dv, 153
    bw = copy_bandwidth()
    print(f"device {torch.cuda.get_device_name()} | triton {triton.__version__} | copy bandwidth {bw:.2f} TB/s")
    rows = []
    for B in args.B:
        torch.manual_seed(B)
        q = torch.randn(B, H, 16, device="cuda", dtype=dtype)
        k = torch.randn(B, H, 16, device="cuda", dtype=dtype)
        v = torch.randn(B, H, dv, device="cuda", dtype=dtype)
        s0 = R.state_from_keys(torch.randn(B, 32, H, 16, device="cuda", dtype=torch.float64),
                               torch.randn(B, 32, H, dv, device="cuda", dtype=torch.float64))
        ref_state = BasedState(s0.S.clone(), s0.z.clone())
        ref = R.based_decode_step(q.double(), k.double(), v.double(), ref_state)
        state_bytes = B * H * D * (dv + 1) * 4 * 2
        floor_ms = state_bytes / bw / 1e9

        def fresh():
            return BasedState(s0.S.float().contiguous(), s0.z.float().contiguous())

        impls = {}
        st_ours = fresh()
        impls["ours_triton"] = (lambda st=st_ours: based_step(q, k, v, st, impl="triton"), st_ours)
        st_ref = fresh()
        impls["torch_ref"] = (lambda st=st_ref: based_step(q, k, v, st, impl="reference"), st_ref)
        if fused_recurrent_linear_attn is not None:
            st_fla = fresh()
            z_fla = st_fla.z[:, None]  # [B, 1, H, D]

            def fla_step(st=st_fla, z=z_fla):
                pq = R.taylor_features(q.float())[:, None]  # [B, 1, H, D]
                pk = R.taylor_features(k.float())[:, None]
                o, _ = fused_recurrent_linear_attn(pq, pk, v.float()[:, None], scale=1.0,
                                                   initial_state=(st.S, z), output_final_state=True,
                                                   normalize=True)
                return o[:, 0]
            impls["fla_fused_recurrent"] = (fla_step, None)
            pq0 = R.taylor_features(q.float())[:, None].contiguous()
            pk0 = R.taylor_features(k.float())[:, None].contiguous()
            v0 = v.float()[:, None].contiguous()

            def fla_kernel(st=st_fla, z=z_fla):
                return fused_recurrent_linear_attn(pq0, pk0, v0, scale=1.0, initial_state=(st.S, z),
                                                   output_final_state=True, normalize=True)[0][:, 0]
            impls["fla_fused_recurrent_kernel_only"] = (fla_kernel, None)

        for name, (fn, st) in impls.items():
            try:
                y = fn()  # first call from s0: check against the fp64 step
                err = rel_err(y, ref)
                if st is not None:
                    err = max(err, rel_err(st.S, ref_state.S))
                ms = do_bench(fn, warmup=25, rep=100, return_mode="median")
                ms_g = None
                if not name.startswith("fla"):  # fla allocates per call; time it eagerly only
                    try:
                        ms_g = do_bench_cudagraph(fn, rep=100, return_mode="median")
                    except Exception:
                        ms_g = None
            except Exception as e:
                print(f"  {name} B={B}: failed {type(e).__name__}: {str(e)[:120]}")
                continue
            best = min(x for x in (ms, ms_g) if x)
            rows.append(dict(impl=name, B=B, H=H, dv=dv, dtype=args.dtype, ms=ms, ms_graph=ms_g,
                             tokens_per_s=B / best * 1e3, tbps=state_bytes / best / 1e9,
                             x_floor=best / floor_ms, rel_err=err))
            print(f"  {name:<32} B={B:<4} {ms:.4f} ms (graph {ms_g if ms_g is None else round(ms_g, 4)})"
                  f" floor {floor_ms:.4f} ms err {err:.1e}", flush=True)
        torch.cuda.empty_cache()

    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        cols = ["impl", "B", "H", "dv", "dtype", "ms", "ms_graph", "tokens_per_s", "tbps", "x_floor", "rel_err"]
        with open(args.out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({c: (f"{r[c]:.4g}" if isinstance(r[c], float) else r[c]) for c in cols})
        print(f"wrote {args.out}")
    print(f"\n{'impl':<34}{'B':>5}{'ms':>9}{'ms(graph)':>10}{'tok/s':>11}{'TB/s':>6}{'xfloor':>7}{'relerr':>9}")
    for r in rows:
        g = "-" if r["ms_graph"] is None else f"{r['ms_graph']:.4f}"
        print(f"{r['impl']:<34}{r['B']:>5}{r['ms']:>9.4f}{g:>10}{r['tokens_per_s']:>11.3g}{r['tbps']:>6.2f}"
              f"{r['x_floor']:>7.1f}{r['rel_err']:>9.1e}")


if __name__ == "__main__":
    main()
