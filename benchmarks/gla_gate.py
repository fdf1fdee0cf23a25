"""GLA's forget gate by our Triton kernels against PyTorch's five ops per layer, same run.

    python benchmarks/gla_gate.py            # H100: GLA-1.3B widths, bf16, fla's prefill (it autotunes once)
    python benchmarks/gla_gate.py --smoke    # CPU, toy widths: the code path only (CI)

1. The prefill gate ``logsigmoid(x W₂ᵀ + b) / 16`` over 32 × 1900 tokens: ``scan.gla_gate_torch`` (the linear,
   the upcast, logsigmoid, the division, the cast to bf16) against ``gla_gate_triton`` (one launch).
2. One decode step of 24 layers (GLA-1.3B: 4 heads, K 256, V 512, batch 32; one float32 state per layer, as the
   model's cache, so no state stays in L2), replayed from a CUDA graph: the gate's own launches + the step kernel
   + the cast of ``o``, against the step kernel computing its gate (tile configs of it).
3. GLA-1.3B ``greedy_generate`` (batch 32, 1900-token prompts, 48 new tokens) with ``GLALM.fuse_gate`` on and off,
   alternated, median of 3: seconds per batch, the prefill alone, decode ms per step, and whether the tokens match.
4. A profile of one generate with the fused gate (top CUDA kernels).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cuda_ms(fn, reps=20):
    """Median ms of ``fn`` by CUDA events (one warm-up)."""
    fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def graphed(fn):
    """``fn`` captured in a CUDA graph (after a warm-up that compiles its kernels); returns the replay."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def kernels_part(dev):
    from jrt_eval.kernels.mamba.gla_triton import gla_gate_triton, gla_step_triton
    from jrt_eval.kernels.mamba.scan import gla_gate_torch

    bf = torch.bfloat16
    B, T, H, K, V, R, L = 32, 1900, 4, 256, 512, 16, 24
    x = torch.randn(B, T, R, device=dev, dtype=bf) * 3
    w, b = torch.randn(H * K, R, device=dev, dtype=bf) / 4, torch.randn(H * K, device=dev, dtype=bf) + 2
    t_torch = cuda_ms(lambda: gla_gate_torch(x, w, b, 16, out_dtype=bf))
    t_tri = cuda_ms(lambda: gla_gate_triton(x, w, b, 16, out_dtype=bf))
    ref, got = gla_gate_torch(x, w, b, 16, out_dtype=bf), gla_gate_triton(x, w, b, 16, out_dtype=bf)
    # the linear is rounded to bf16 (as F.linear returns it) after an fp32 sum in a different order (cuBLAS vs
    # tl.dot), so a few inputs round to the neighbouring bf16 value of the linear: the gate then moves by that step
    # times logsigmoid's slope / 16
    diff = (got.float() - ref.float()).abs()
    mb = (x.numel() + B * T * H * K) * 2 / 1e6
    print(f"prefill gate {B}x{T}: PyTorch {t_torch:.3f} ms, Triton {t_tri:.3f} ms ({t_torch / t_tri:.1f}x; "
          f"{mb / t_tri:.0f} GB/s of its {mb:.0f} MB); results differ on {(diff > 0).float().mean().item():.2%} of "
          f"elements, by at most {diff.max().item():.2e} (gate values down to {ref.float().min().item():.2f})",
          flush=True)

    # decode: one step of L layers, each with its own state and weights (the packed projection's row per layer)
    width = 2 * H * K + 2 * H * V + R
    proj = torch.randn(L, B, width, device=dev, dtype=bf)
    ws = [torch.randn(H * K, R, device=dev, dtype=bf) / 4 for _ in range(L)]
    bs = [torch.randn(H * K, device=dev, dtype=bf) + 2 for _ in range(L)]
    states = [torch.randn(B, H, K, V, device=dev) * 0.1 for _ in range(L)]

    def parts(i):
        p = proj[i]
        q, k, v = (p[:, a:a + H * n].unflatten(-1, (H, n)) for a, n in ((0, K), (H * K, K), (2 * H * K, V)))
        return q, k, v, p[:, -R:]

    def separate():
        for i in range(L):
            q, k, v, xg = parts(i)
            gk = gla_gate_torch(xg, ws[i], bs[i], 16).view(B, H, K)
            gla_step_triton(states[i], q, k, v, gk, K ** -0.5).to(bf)

    def fused(cfg):
        def run():
            for i in range(L):
                q, k, v, xg = parts(i)
                gla_step_triton(states[i], q, k, v, None, K ** -0.5, out_dtype=bf, gate=(xg, ws[i], bs[i], 16, None),
                                **cfg)
        return run

    base = cuda_ms(graphed(separate)) / L * 1e3
    print(f"decode step, {L} layers graphed, per layer-step: gate ops + step + cast {base:.1f} us", flush=True)
    state_mb = B * H * K * V * 4 * 2 / 1e6
    for cfg in ({}, {"block_k": 64}, {"block_k": 32, "num_warps": 2}, {"block_k": 16}, {"block_k": 32, "block_v": 32}):
        t = cuda_ms(graphed(fused(cfg))) / L * 1e3
        print(f"  fused gate {cfg or 'default (block_k 32, block_v 64, 4 warps)'}: {t:.1f} us ({base / t:.2f}x; "
              f"state read + write {state_mb / t:.2f} TB/s)", flush=True)
    # the two variants on the same inputs: same state, same o
    s1, s2 = states[0].clone(), states[0].clone()
    q, k, v, xg = parts(0)
    o1 = gla_step_triton(s1, q, k, v, gla_gate_torch(xg, ws[0], bs[0], 16).view(B, H, K), K ** -0.5)
    o2 = gla_step_triton(s2, q, k, v, None, K ** -0.5, gate=(xg, ws[0], bs[0], 16, None))
    print(f"  fused vs separate: o {(o1 - o2).abs().max().item():.2e}, state {(s1 - s2).abs().max().item():.2e}")


def model_part(dev, smoke):
    from common import ab_generate
    from gpu_check_ssm import gla_speed_setup

    model, ids, new = gla_speed_setup(dev, smoke)
    ab_generate(model, ids, new, {"fused gate": lambda m: setattr(m, "fuse_gate", True),
                                  "PyTorch gate": lambda m: setattr(m, "fuse_gate", False)})
    return model, ids, new


def profile_part(model, ids, new):
    from torch.profiler import ProfilerActivity, profile

    from jrt_eval.model_adapters.base import greedy_generate

    model.fuse_gate = True
    model.release_graphs()
    greedy_generate(model, ids, None, 2)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        greedy_generate(model, ids, None, new)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=70))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, toy widths: the code path only (CI)")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args(argv)
    dev = torch.device("cpu" if args.smoke else "cuda")
    if dev.type == "cuda":
        kernels_part(dev)
    model, ids, new = model_part(dev, args.smoke)
    if dev.type == "cuda" and not args.no_profile:
        profile_part(model, ids, new)


if __name__ == "__main__":
    main()
