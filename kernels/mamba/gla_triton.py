"""Triton kernel for one GLA decode step, in place on the float32 state.

``S ← diag(exp(gk)) S + k vᵀ`` and ``o = (scale · q)ᵀ S`` per (row, head): one read and one write of the
``[K, V]`` state (PyTorch needs about five passes: decay, outer-product add, then the read for ``o``).
Grid: (row·head, V / BLOCK_V); each program walks K in blocks of BLOCK_K. Tested against
``reference.gla_recurrent_ref`` under ``TRITON_INTERPRET=1`` (tests/test_kernels_mamba.py).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _gla_step_kernel(s_ptr, q_ptr, k_ptr, v_ptr, g_ptr, o_ptr, scale, H, K, V,
                     s_qb, s_qh, s_kb, s_kh, s_vb, s_vh, s_gb, s_gh,
                     BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr):
    pid_bh = tl.program_id(0).to(tl.int64)
    pid_v = tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    mv = offs_v < V
    v = tl.load(v_ptr + b * s_vb + h * s_vh + offs_v, mask=mv, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK_V], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mk = offs_k < K
        m = mk[:, None] & mv[None, :]
        ptrs = s_ptr + pid_bh * K * V + offs_k[:, None] * V + offs_v[None, :]
        s = tl.load(ptrs, mask=m, other=0.0)
        g = tl.load(g_ptr + b * s_gb + h * s_gh + offs_k, mask=mk, other=0.0).to(tl.float32)
        kk = tl.load(k_ptr + b * s_kb + h * s_kh + offs_k, mask=mk, other=0.0).to(tl.float32)
        qq = tl.load(q_ptr + b * s_qb + h * s_qh + offs_k, mask=mk, other=0.0).to(tl.float32) * scale
        s = s * tl.exp(g)[:, None] + kk[:, None] * v[None, :]
        tl.store(ptrs, s, mask=m)
        acc += tl.sum(qq[:, None] * s, axis=0)
    tl.store(o_ptr + pid_bh * V + offs_v, acc.to(o_ptr.dtype.element_ty), mask=mv)


def gla_step_triton(state, q, k, v, gk, scale: float, out_dtype=torch.float32, block_k: int = 64, block_v: int = 64,
                    num_warps: int = 4):
    """``state [b, h, K, V]`` float32 contiguous (updated in place); ``q, k, gk: [b, h, K]``; ``v: [b, h, V]`` --
    strided views are read as they are (the adapter's come from one packed projection) as long as the last dim
    is contiguous. Returns ``o [b, h, V]``."""
    assert state.dtype == torch.float32 and state.is_contiguous()
    b, h, K, V = state.shape
    q, k, v, gk = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v, gk))
    o = torch.empty(b, h, V, device=state.device, dtype=out_dtype)
    grid = (b * h, triton.cdiv(V, block_v))
    _gla_step_kernel[grid](state, q, k, v, gk, o, float(scale), h, K, V,
                           q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                           gk.stride(0), gk.stride(1), BLOCK_K=block_k, BLOCK_V=block_v, num_warps=num_warps)
    return o
