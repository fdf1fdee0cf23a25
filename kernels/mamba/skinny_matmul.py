"""Triton: ``y = x Wᵀ`` for a few rows (decode: one token per sequence, batch ≤ 64), reading W once.

At batch 32 the decode step's projections are matrix-vector products in all but name: the cost is reading the
weight (Mamba-2-130M's in_proj: 5.1 MB, 1.5 µs at the H100's 3.35 TB/s). cuBLAS's kernels for these shapes
took 5.2 µs (in_proj) and 4.9 µs (out_proj) per layer-step on an H100 (benchmarks/README.md, profile of
2026-11-23): they tile the few rows as if they were many and leave most SMs idle. Here every program owns
``BLOCK_N`` output features for all rows and streams its slice of W through a multi-stage pipeline, so many
programs keep many loads in flight. Plain PyTorch (``F.linear``) is the reference and the CPU path.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_ROWS = 64  # beyond this, a tiled GEMM (cuBLAS) reuses W across rows and wins


@triton.jit
def _skinny_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, N, K, s_xm, s_wn, s_ym,
                   HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mm, mn = offs_m < M, offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mk = (k0 + offs_k) < K
        x = tl.load(x_ptr + offs_m[:, None] * s_xm + (k0 + offs_k)[None, :], mask=mm[:, None] & mk[None, :], other=0.0)
        w = tl.load(w_ptr + offs_n.to(tl.int64)[:, None] * s_wn + (k0 + offs_k)[None, :],
                    mask=mn[:, None] & mk[None, :], other=0.0)
        acc = tl.dot(x, tl.trans(w), acc=acc)
    if HAS_BIAS:
        acc = acc + tl.load(b_ptr + offs_n, mask=mn, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + offs_m[:, None] * s_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=mm[:, None] & mn[None, :])


DEFAULT = dict(BLOCK_N=16, BLOCK_K=128, num_warps=4, num_stages=4)


def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The kernel applies: CUDA, 16-bit, at most ``MAX_ROWS`` rows, the weight and the rows' last dim contiguous."""
    return (x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) and weight.dtype == x.dtype
            and x.numel() // max(x.shape[-1], 1) <= MAX_ROWS and weight.is_contiguous() and x.stride(-1) == 1)


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias=None, config=None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for ``x [..., K]`` with at most ``MAX_ROWS`` rows (fp32 accumulation)."""
    cfg = dict(DEFAULT, **(config or {}))
    lead, K = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M, N = x2.shape[0], weight.shape[0]
    if M > MAX_ROWS:
        raise ValueError(f"skinny_linear takes at most {MAX_ROWS} rows, got {M}")
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    if M:
        _skinny_kernel[(triton.cdiv(N, cfg["BLOCK_N"]),)](
            x2, weight, bias if bias is not None else weight, y, M, N, K, x2.stride(0), weight.stride(0), y.stride(0),
            HAS_BIAS=bias is not None, BLOCK_M=max(16, triton.next_power_of_2(M)), BLOCK_N=cfg["BLOCK_N"],
            BLOCK_K=cfg["BLOCK_K"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return y.view(*lead, N)
