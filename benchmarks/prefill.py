"""Prefill benchmark: JRT-Prompt (Based at 2N) and JRT-RNN (PLA at N) vs FlashAttention-2 at N.

    python benchmarks/prefill.py                       # the sweep: N 2048..32768, batch 1..64
    python benchmarks/prefill.py --N 32768 --B 16      # the paper's headline shape
    python benchmarks/prefill.py --tune --N 32768 --B 16   # tile configs of our Based kernel
    python benchmarks/prefill.py --tune-state --N 32768 --B 16   # ... of its state-only pass (JRT-RNN encoder)

One run compares, per (N, B): our fused Based kernel at 2N (JRT-Prompt reads the prompt twice) and
at N, our PLA kernel at N (encoder over the first M = N tokens, or --enc-frac), PyTorch SDPA with the
FlashAttention-2 backend and with the cuDNN backend at N (causal, head dim = dv), fla 0.6.0's
``fused_chunk_based`` and ``parallel_based`` at 2N, and the plain-PyTorch reference at 2N (small
shapes only). Shapes: H = 16 heads, feature dim f = 16, head/value dim dv = 64, bf16.

Every output is checked first on a slice (batch row 0, heads 0-1, the whole sequence) against a
float32 reference computed from the same bf16 inputs (``‖out − ref‖ / ‖ref‖``, must stay under 1e-2
for bf16). Times are medians of ``triton.testing.do_bench``. Ratios: FA2 time at N over each time.
For our kernels the table adds achieved TFLOP/s (tensor-core FLOPs the kernel executes) and TB/s
(the minimum HBM bytes: q, k, v read once, o written once, plus the state). Results go to
``results/bench_prefill.csv`` (or --out).
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import sys
import time
from pathlib import Path

import torch

from common import rel_err  # benchmarks/common.py (the scripts' folder is on the path)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

H, F, DV = 16, 16, 64


# ----------------------------------------------------------------------------------------- costs
def based_cost(B, T, H_, dv, BT=64, with_q=True):
    """(tensor-core FLOPs executed by our kernel, minimum HBM bytes) for a Based prefill."""
    chunks = B * H_ * math.ceil(T / BT)
    sel = 2 * (BT * 16 * 128 * 2) + 2 * (BT * 16 * 32 * 2)  # selections of one side
    readout = BT * 160 * dv * 2
    update = 160 * BT * dv * 2
    intra = BT * BT * 16 * 2 + BT * BT * dv * 2
    flops = chunks * ((2 * sel + readout + intra + update) if with_q else (sel + update))
    bytes_ = B * T * H_ * ((2 * F + 2 * dv) * 2 if with_q else (F + dv) * 2)
    bytes_ += B * H_ * 153 * (dv + 1) * 4
    return flops, bytes_


def useful_flops(B, T, H_, dv):
    """FLOPs of the 153-feature linear form plus the causal half of 64-token diagonal blocks."""
    return B * H_ * T * (2 * 2 * 153 * dv + 64 * (F + dv))


def attn_flops(B, N, H_, d):
    return 4 * B * H_ * N * N * d / 2  # causal


# ----------------------------------------------------------------------------------------- refs
def based_ref_slice(q, k, v, enc=None):
    """fp32 reference on batch 0, heads 0-1 (whole sequence); enc = (k_enc, v_enc, enc_mask)."""
    from jrt_eval.kernels.based import reference as R

    sl = lambda x: x[:1, :, :2].float()  # noqa: E731
    if enc is None:
        return R.based_attention_chunked(sl(q), sl(k), sl(v), chunk_size=256)[0]
    ke, ve, em = enc
    return R.pla_attention_chunked(sl(q), sl(k), sl(v), sl(ke), sl(ve), em[:1], chunk_size=256)[0]


def attn_ref_slice(q, k, v, block=2048):
    """fp32 causal softmax attention for batch 0, heads 0-1 of [B, H, N, d] inputs."""
    qs, ks, vs = (x[:1, :2].float() for x in (q, k, v))
    N, d = qs.shape[2], qs.shape[3]
    out = torch.empty_like(qs)
    for s in range(0, N, block):
        e = min(s + block, N)
        sc = qs[:, :, s:e] @ ks[:, :, :e].transpose(-1, -2) / math.sqrt(d)
        mask = torch.arange(s, e, device=q.device)[:, None] >= torch.arange(e, device=q.device)[None, :]
        sc = sc.masked_fill(~mask, float("-inf"))
        out[:, :, s:e] = torch.softmax(sc, -1) @ vs[:, :, :e]
    return out


# ----------------------------------------------------------------------------------------- impls
def bench(fn, rep_ms=100):
    """Median of do_bench with at least ~8 timed calls (do_bench sizes its loops from ``rep``)."""
    import triton

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    est = (time.perf_counter() - t0) * 1e3
    return triton.testing.do_bench(fn, warmup=max(25, 2 * est), rep=max(rep_ms, 8 * est), return_mode="median")


def run_sweep(Ns, Bs, impls, enc_frac, dtype, out_csv, rep_ms):
    from jrt_eval.kernels.based import based_prefill, pla_prefill
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as Fn

    try:
        from fla.ops.based import fused_chunk_based, parallel_based
        fla_ok = True
    except Exception as e:  # pragma: no cover
        print(f"fla not importable: {e!r}")
        fla_ok = False

    rows = []
    dev = "cuda"

    def add(impl, N, T, B, ms, err, note="", flops=None, bytes_=None):
        row = dict(impl=impl, N=N, T=T, B=B, H=H, f=F, dv=DV, dtype=str(dtype).replace("torch.", ""),
                   ms=ms, rel_err=err, tflops=(flops / ms / 1e9 if (flops and ms) else None),
                   tbps=(bytes_ / ms / 1e9 if (bytes_ and ms) else None), note=note)
        rows.append(row)
        print(f"  {impl:<22} N={N:<6} T={T:<6} B={B:<3} {ms if ms is None else round(ms, 3)!s:>9} ms"
              f"  err={err if err is None else f'{err:.1e}'}  {note}", flush=True)

    for N in Ns:
        for B in Bs:
            print(f"== N={N} B={B}", flush=True)
            torch.manual_seed(N + B)
            T2 = 2 * N
            # --- Based at 2N and N (ours), fla, reference
            for T, tag in ((T2, "2N"), (N, "N")):
                want = [i for i in impls if i.split("@")[-1] == tag and i.split("@")[0] in
                        ("ours_based", "fla_fused_chunk", "fla_parallel", "torch_ref")]
                if not want:
                    continue
                q = torch.randn(B, T, H, F, device=dev, dtype=dtype)
                k = torch.randn(B, T, H, F, device=dev, dtype=dtype)
                v = torch.randn(B, T, H, DV, device=dev, dtype=dtype)
                ref = based_ref_slice(q, k, v)
                for impl in want:
                    name = impl.split("@")[0]
                    try:
                        if name == "ours_based":
                            fn = lambda: based_prefill(q, k, v, output_final_state=True, impl="triton")  # noqa: E731
                            o = fn()[0]
                            fl, by = based_cost(B, T, H, DV)
                        elif name == "fla_fused_chunk":
                            if not fla_ok:
                                continue
                            fn = lambda: fused_chunk_based(q, k, v)  # noqa: E731
                            o = fn()
                            fl, by = None, None
                        elif name == "fla_parallel":
                            if not fla_ok or B * T * T > 16 * 16384 ** 2:
                                add(impl, N, T, B, None, None, "skipped (quadratic, too slow)")
                                continue
                            fn = lambda: parallel_based(q, k, v)  # noqa: E731
                            o = fn()
                            fl, by = None, None
                        else:  # torch_ref
                            if B * T > 4 * 8192:
                                add(impl, N, T, B, None, None, "skipped (size)")
                                continue
                            from jrt_eval.kernels.based import reference as R
                            fn = lambda: R.based_attention_chunked(q, k, v, output_final_state=True)  # noqa: E731
                            o = fn()[0]
                            fl, by = None, None
                        err = rel_err(o[:1, :, :2], ref)
                        del o
                        ms = bench(fn, rep_ms)
                        add(impl, N, T, B, ms, err, flops=fl, bytes_=by)
                    except torch.cuda.OutOfMemoryError:
                        add(impl, N, T, B, None, None, "OOM")
                    gc.collect()
                    torch.cuda.empty_cache()
                del q, k, v, ref
                gc.collect()
                torch.cuda.empty_cache()
            # --- PLA at N (ours)
            if "ours_pla@N" in impls:
                q = torch.randn(B, N, H, F, device=dev, dtype=dtype)
                k = torch.randn(B, N, H, F, device=dev, dtype=dtype)
                v = torch.randn(B, N, H, DV, device=dev, dtype=dtype)
                ke = torch.randn(B, N, H, F, device=dev, dtype=dtype)
                ve = torch.randn(B, N, H, DV, device=dev, dtype=dtype)
                M = max(1, int(N * enc_frac))
                em = (torch.arange(N, device=dev) < M).expand(B, N).contiguous()
                ref = based_ref_slice(q, k, v, enc=(ke, ve, em))
                # the encoder mask is a prefix of each row: passed as a range, as the adapters pass theirs
                fn = lambda: pla_prefill(q, k, v, ke, ve, em, output_final_state=True, impl="triton",  # noqa: E731
                                         masks_are_ranges=True)
                o = fn()[0]
                err = rel_err(o[:1, :, :2], ref)
                del o
                ms = bench(fn, rep_ms)
                f1, b1 = based_cost(B, N, H, DV)
                f2, b2 = based_cost(B, M, H, DV, with_q=False)
                add("ours_pla@N", N, N, B, ms, err, f"encoder M={M}", flops=f1 + f2, bytes_=b1 + b2)
                del q, k, v, ke, ve, em, ref
                gc.collect()
                torch.cuda.empty_cache()
            # --- attention at N
            sdpa = [i for i in impls if i in ("fa2@N", "cudnn@N")]
            if sdpa:
                qa = torch.randn(B, H, N, DV, device=dev, dtype=dtype)
                ka = torch.randn(B, H, N, DV, device=dev, dtype=dtype)
                va = torch.randn(B, H, N, DV, device=dev, dtype=dtype)
                ref = attn_ref_slice(qa, ka, va)
                for impl in sdpa:
                    backend = SDPBackend.FLASH_ATTENTION if impl == "fa2@N" else SDPBackend.CUDNN_ATTENTION

                    def fn(backend=backend):
                        with sdpa_kernel(backend):
                            return Fn.scaled_dot_product_attention(qa, ka, va, is_causal=True)
                    try:
                        o = fn()
                        err = rel_err(o[:1, :2], ref)
                        del o
                        ms = bench(fn, rep_ms)
                        add(impl, N, N, B, ms, err, flops=attn_flops(B, N, H, DV))
                    except Exception as e:  # backend unavailable
                        add(impl, N, N, B, None, None, f"failed: {type(e).__name__}: {str(e)[:80]}")
                del qa, ka, va, ref
                gc.collect()
                torch.cuda.empty_cache()

    # ratios
    def t(impl, N, B):
        for r in rows:
            if r["impl"] == impl and r["N"] == N and r["B"] == B:
                return r["ms"]
        return None

    for r in rows:
        fa2 = t("fa2@N", r["N"], r["B"])
        flc = t("fla_fused_chunk@2N", r["N"], r["B"]) if r["T"] == 2 * r["N"] else t("fla_fused_chunk@N", r["N"], r["B"])
        r["x_vs_fa2"] = fa2 / r["ms"] if (fa2 and r["ms"]) else None
        r["x_vs_fla_chunk"] = flc / r["ms"] if (flc and r["ms"] and r["impl"].startswith("ours")) else None

    if out_csv:
        Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
        cols = ["impl", "N", "T", "B", "H", "f", "dv", "dtype", "ms", "x_vs_fa2", "x_vs_fla_chunk",
                "rel_err", "tflops", "tbps", "note"]
        with open(out_csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({c: (f"{r[c]:.4g}" if isinstance(r.get(c), float) else r.get(c)) for c in cols})
        print(f"wrote {out_csv}")
    print_table(rows)
    return rows


def print_table(rows):
    print()
    print(f"{'impl':<22}{'N':>6}{'T':>7}{'B':>4}{'ms':>10}{'xFA2':>8}{'xflaC':>7}{'relerr':>9}{'TF/s':>7}{'TB/s':>6}")
    for r in rows:
        if r["ms"] is None:
            print(f"{r['impl']:<22}{r['N']:>6}{r['T']:>7}{r['B']:>4}{'-':>10}  {r['note']}")
            continue
        f = lambda x, p: ("-" if x is None else f"{x:.{p}f}")  # noqa: E731
        err = "-" if r["rel_err"] is None else f"{r['rel_err']:.1e}"
        print(f"{r['impl']:<22}{r['N']:>6}{r['T']:>7}{r['B']:>4}{r['ms']:>10.3f}{f(r['x_vs_fa2'], 1):>8}"
              f"{f(r['x_vs_fla_chunk'], 1):>7}{err:>9}{f(r['tflops'], 0):>7}{f(r['tbps'], 2):>6}")


def run_tune(N, B, dtype, rep_ms, configs=None):
    """Our Based kernel at 2N over tile configs (and segment counts), checked then timed."""
    from jrt_eval.kernels.based import triton_modules

    tp = triton_modules()[0]
    T = 2 * N
    q = torch.randn(B, T, H, F, device="cuda", dtype=dtype)
    k = torch.randn(B, T, H, F, device="cuda", dtype=dtype)
    v = torch.randn(B, T, H, DV, device="cuda", dtype=dtype)
    ref = based_ref_slice(q, k, v)
    configs = configs or [
        dict(BT=bt, num_warps=w, num_stages=st, BLOCK_DV=bdv, kt=kt, sel16=s16)
        for bt, w, st, bdv, kt, s16 in [
            (64, 4, 2, 64, True, True), (64, 4, 1, 64, True, True), (64, 4, 3, 64, True, True),
            (64, 4, 2, 64, False, True), (64, 4, 2, 32, True, True), (32, 4, 2, 64, True, True),
            (64, 4, 2, 64, True, False),
            # 8 warps spill far less (BT 32: 8 bytes, BT 64: 296, vs 408 for the default) but timed 2.0-2.4x
            # slower on the H100 (13.7 / 11.2 ms vs 5.7): fewer wgmma, one CTA per SM. Kernel variants tried and
            # dropped (benchmarks/README.md): block X's state transposed (5.38 vs 5.58 ms, but faulted on the GPU
            # with a key mask), z on tensor cores, merged selections, a Gluon kernel with async wgmma (6.26 vs 5.91)
            (32, 8, 2, 64, True, True), (64, 8, 2, 64, True, True),
        ]
    ]
    res = []
    for cfg in configs:
        cfg = dict(cfg)
        n_seg = cfg.pop("n_seg", None)
        t0 = time.time()
        try:
            fn = lambda: tp.based_prefill_triton(q, k, v, output_final_state=True, config=cfg, n_seg=n_seg)  # noqa: E731
            o = fn()[0]
            err = rel_err(o[:1, :, :2], ref)
            del o
            ms = bench(fn, rep_ms)
        except Exception as e:
            print(f"  {cfg} n_seg={n_seg}: failed {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        fl, by = based_cost(B, T, H, DV, BT=cfg.get("BT", 64))
        res.append((cfg, n_seg, ms, err))
        kk = tp.LAST_KERNEL
        info = ""
        try:
            ptx = kk.asm.get("ptx", "")
            info = (f"regs={kk.n_regs} spills={kk.n_spills} smem={kk.metadata.shared} "
                    f"wgmma={ptx.count('wgmma.mma_async')} mma.sync={ptx.count('mma.sync')}")
        except Exception as e:  # pragma: no cover
            info = f"(no compile info: {e!r})"
        print(f"  {cfg} n_seg={n_seg}: {ms:.3f} ms err={err:.1e} {fl / ms / 1e9:.0f} TF/s {by / ms / 1e9:.2f} TB/s"
              f" {info} (compile+check {time.time() - t0:.1f}s)", flush=True)
    res.sort(key=lambda r: r[2])
    if res:
        print(f"best: {res[0][0]} n_seg={res[0][1]} {res[0][2]:.3f} ms")
    return res


def run_tune_state(N, B, dtype, rep_ms, configs=None):
    """The state-only pass (JRT-RNN's encoder over M = N tokens, ``state_from_keys_triton``) over tile configs:
    it has no intra-chunk quadratic block, so it may prefer longer chunks than the full prefill."""
    from jrt_eval.kernels.based import reference as R
    from jrt_eval.kernels.based import triton_modules

    tp = triton_modules()[0]
    k = torch.randn(B, N, H, F, device="cuda", dtype=dtype)
    v = torch.randn(B, N, H, DV, device="cuda", dtype=dtype)
    want = R.state_from_keys(k[:1, :, :2].float(), v[:1, :, :2].float())
    configs = configs or [
        dict(BT=bt, num_warps=w, num_stages=st, BLOCK_DV=64, kt=True, sel16=True)
        for bt, w, st in [(64, 4, 2), (128, 4, 2), (128, 8, 2), (256, 8, 2), (64, 8, 2), (128, 8, 3)]
    ]
    res = []
    for cfg in configs:
        try:
            fn = lambda: tp.state_from_keys_triton(k, v, None, config=cfg)  # noqa: E731
            st = fn()
            err = max(rel_err(st.S[:1, :2], want.S), rel_err(st.z[:1, :2], want.z))
            ms = bench(fn, rep_ms)
        except Exception as e:
            print(f"  state {cfg}: failed {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        res.append((cfg, ms, err))
        print(f"  state {cfg}: {ms:.3f} ms err={err:.1e}", flush=True)
    res.sort(key=lambda r: r[1])
    if res:
        print(f"best state-pass config: {json.dumps(res[0][0])} {res[0][1]:.3f} ms "
              f"(use it with JRT_EVAL_BASED_STATE_CONFIG)")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, nargs="+", default=[2048, 4096, 8192, 16384, 32768])
    ap.add_argument("--B", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--impls", nargs="+", default=[
        "ours_based@2N", "ours_based@N", "ours_pla@N", "fa2@N", "cudnn@N",
        "fla_fused_chunk@2N", "fla_parallel@2N", "torch_ref@2N"])
    ap.add_argument("--enc-frac", type=float, default=1.0, help="PLA encoder length M as a fraction of N")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--rep-ms", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_prefill.csv"))
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--configs", default=None, help="--tune / --tune-state: JSON list of configs (default: built in; "
                    "keys BT, num_warps, num_stages, BLOCK_DV, kt, sel16, maxnreg, n_seg)")
    ap.add_argument("--best-out", default=None, help="--tune: write the fastest config (JSON) here")
    ap.add_argument("--tune-state", action="store_true",
                    help="tile configs of the state-only pass (JRT-RNN encoder over M = N tokens)")
    args = ap.parse_args(argv)
    assert torch.cuda.is_available(), "the prefill benchmark needs a CUDA GPU"
    dtype = getattr(torch, args.dtype)
    import triton

    print(f"device {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__}", end="")
    try:
        import fla

        print(f" | fla {getattr(fla, '__version__', '?')}")
    except Exception:
        print(" | fla missing")
    if args.tune_state:
        for N in args.N:
            for B in args.B:
                print(f"== tune state-only pass N={N} B={B}")
                run_tune_state(N, B, dtype, args.rep_ms, json.loads(args.configs) if args.configs else None)
        return
    if args.tune:
        best = None
        for N in args.N:
            for B in args.B:
                print(f"== tune N={N} (Based at 2N) B={B}")
                res = run_tune(N, B, dtype, args.rep_ms, json.loads(args.configs) if args.configs else None)
                best = best or (res[0][0] if res else None)
        if args.best_out and best:
            Path(args.best_out).write_text(json.dumps(best))
        return
    run_sweep(args.N, args.B, args.impls, args.enc_frac, dtype, args.out, args.rep_ms)


if __name__ == "__main__":
    main()
