"""Triton kernels of GLA: its log forget gate, and one decode step in place on the float32 state.

The gate ``gk = logsigmoid(x W₂ᵀ + b) / normalizer`` (``x``: the rank-16 first half of fla's ``gk_proj``) is
one launch instead of five PyTorch passes (the second linear, the upcast, logsigmoid, the division, the cast);
the linear's output is rounded to x's dtype first, as ``F.linear`` returns it, then the rest is float32 math
(the PyTorch path: ``scan.gla_gate_torch``).

Decode step: ``S ← diag(exp(gk)) S + k vᵀ`` and ``o = (scale · q)ᵀ S`` per (row, head): one read and one write
of the ``[K, V]`` state (PyTorch needs about five passes: decay, outer-product add, then the read for ``o``).
Grid: (row·head, V / BLOCK_V); each program walks K in blocks of BLOCK_K. With ``FUSED_GATE`` each program
computes its K block's gate from ``x`` itself (a [BLOCK_K, R] product), so a decode step launches one kernel for
what took six. Tested against ``reference.gla_recurrent_ref`` under ``TRITON_INTERPRET=1``
(tests/test_kernels_mamba.py).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _log1p(u):
    """log(1 + u) for u ≥ 0 to float32 accuracy (Goldberg: log(w) · u / (w - 1) with w = 1 + u rounded)."""
    w = 1.0 + u
    return tl.where(w == 1.0, u, tl.log(w) * (u / tl.where(w == 1.0, 1.0, w - 1.0)))


@triton.jit
def _log_gate(lin, normalizer, clamp_min, HAS_CLAMP: tl.constexpr):
    """logsigmoid(lin) / normalizer (clamped below), float32: PyTorch's min(x, 0) - log1p(exp(-|x|))."""
    g = (tl.minimum(lin, 0.0) - _log1p(tl.exp(-tl.abs(lin)))) / normalizer
    if HAS_CLAMP:
        g = tl.maximum(g, clamp_min)
    return g


@triton.jit
def _gla_gate_kernel(x_ptr, w_ptr, b_ptr, o_ptr, N, HK, R, s_xn, normalizer, clamp_min,
                     HAS_CLAMP: tl.constexpr, PRECISION: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):
    pid_m = tl.program_id(0).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, BLOCK_R)
    mm, mn, mr = offs_m < N, offs_n < HK, offs_r < R
    x = tl.load(x_ptr + offs_m[:, None] * s_xn + offs_r[None, :], mask=mm[:, None] & mr[None, :], other=0.0)
    wt = tl.load(w_ptr + offs_n[None, :] * R + offs_r[:, None], mask=mr[:, None] & mn[None, :], other=0.0)
    lin = tl.dot(x, wt, input_precision=PRECISION) + tl.load(b_ptr + offs_n, mask=mn, other=0.0).to(tl.float32)[None, :]
    lin = lin.to(x_ptr.dtype.element_ty).to(tl.float32)  # F.linear's output, in x's dtype
    g = _log_gate(lin, normalizer, clamp_min, HAS_CLAMP)
    tl.store(o_ptr + offs_m[:, None] * HK + offs_n[None, :], g.to(o_ptr.dtype.element_ty),
             mask=mm[:, None] & mn[None, :])


@triton.jit
def _gla_step_kernel(s_ptr, q_ptr, k_ptr, v_ptr, g_ptr, o_ptr, scale, H, K, V,
                     s_qb, s_qh, s_kb, s_kh, s_vb, s_vh, s_gb, s_gh,
                     x_ptr, w_ptr, b_ptr, s_xb, G, normalizer, clamp_min,
                     FUSED_GATE: tl.constexpr, HAS_CLAMP: tl.constexpr, R: tl.constexpr,
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
        if FUSED_GATE:  # this K block's gate rows (of the key head this query head reads: h // G), one column of
            rows = (h // G) * K + offs_k  # W at a time: a [BLOCK_K] vector in the layout of g's own load
            lin = tl.load(b_ptr + rows, mask=mk, other=0.0).to(tl.float32)
            for r in tl.static_range(R):
                xr = tl.load(x_ptr + b * s_xb + r).to(tl.float32)
                lin += tl.load(w_ptr + rows * R + r, mask=mk, other=0.0).to(tl.float32) * xr
            g = _log_gate(lin.to(x_ptr.dtype.element_ty).to(tl.float32), normalizer, clamp_min, HAS_CLAMP)
        else:
            g = tl.load(g_ptr + b * s_gb + h * s_gh + offs_k, mask=mk, other=0.0).to(tl.float32)
        kk = tl.load(k_ptr + b * s_kb + h * s_kh + offs_k, mask=mk, other=0.0).to(tl.float32)
        qq = tl.load(q_ptr + b * s_qb + h * s_qh + offs_k, mask=mk, other=0.0).to(tl.float32) * scale
        s = s * tl.exp(g)[:, None] + kk[:, None] * v[None, :]
        tl.store(ptrs, s, mask=m)
        acc += tl.sum(qq[:, None] * s, axis=0)
    tl.store(o_ptr + pid_bh * V + offs_v, acc.to(o_ptr.dtype.element_ty), mask=mv)


def _rank_block(r: int) -> int:
    return max(16, triton.next_power_of_2(r))  # tl.dot's smallest inner size


def _rows(x):
    return x if x.stride(-1) == 1 else x.contiguous()


def gla_gate_triton(x, weight, bias, normalizer: float, clamp_min=None, out_dtype=torch.float32,
                    block_m: int = 64, block_n: int = 128):
    """``logsigmoid(x Wᵀ + b) / normalizer`` for ``x [..., R]`` (rows may be strided), ``weight [HK, R]``,
    ``bias [HK]``; returns ``[..., HK]`` in ``out_dtype``."""
    R = x.shape[-1]
    HK = weight.shape[0]
    x2 = _rows(x).reshape(-1, R)  # a view for the adapters' inputs (rows of one projection)
    w, bias = weight.contiguous(), bias.contiguous()
    out = torch.empty(*x.shape[:-1], HK, device=x.device, dtype=out_dtype)
    N = x2.shape[0]
    grid = (triton.cdiv(N, block_m), triton.cdiv(HK, block_n))
    _gla_gate_kernel[grid](x2, w, bias, out, N, HK, R, x2.stride(0), float(normalizer),
                           0.0 if clamp_min is None else float(clamp_min), HAS_CLAMP=clamp_min is not None,
                           PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
                           BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_R=_rank_block(R), num_warps=4)
    return out


def gla_step_triton(state, q, k, v, gk, scale: float, out_dtype=torch.float32, block_k=None, block_v: int = 64,
                    num_warps: int = 4, gate=None):
    """``state [b, h, K, V]`` float32 contiguous (updated in place); ``q, k, gk: [b, h, K]``; ``v: [b, h, V]`` --
    strided views are read as they are (the adapter's come from one packed projection) as long as the last dim
    is contiguous. ``gate``: instead of ``gk`` (None), ``(x [b, R], weight [h_kv K, R], bias, normalizer,
    clamp_min)`` to compute it in the kernel (query head h reads key head ``h // (h / h_kv)``). Returns
    ``o [b, h, V]``."""
    assert state.dtype == torch.float32 and state.is_contiguous()
    b, h, K, V = state.shape
    if block_k is None:  # H100, GLA-1.3B, batch 32 (benchmarks/gla_gate.py): with the gate inside, 32 rows of K per
        block_k = 32 if gate is not None else 64  # block ran 53.5 us per layer-step against 56.1 for 64
    q, k, v = (_rows(t) for t in (q, k, v))
    o = torch.empty(b, h, V, device=state.device, dtype=out_dtype)
    grid = (b * h, triton.cdiv(V, block_v))
    if gate is None:
        gk = _rows(gk)
        x = w = bias = gk
        R, s_xb, groups, normalizer, clamp_min = 1, 0, 1, 1.0, None
        s_gb, s_gh = gk.stride(0), gk.stride(1)
    else:
        assert gk is None, "pass gk or gate, not both"
        x, w, bias, normalizer, clamp_min = gate
        x, w, bias = _rows(x), w.contiguous(), bias.contiguous()
        R, s_xb = x.shape[-1], x.stride(0)
        groups = h // (w.shape[0] // K)
        gk, s_gb, s_gh = x, 0, 0
    _gla_step_kernel[grid](state, q, k, v, gk, o, float(scale), h, K, V,
                           q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), s_gb, s_gh,
                           x, w, bias, s_xb, groups, float(normalizer), 0.0 if clamp_min is None else float(clamp_min),
                           FUSED_GATE=gate is not None, HAS_CLAMP=clamp_min is not None, R=R,
                           BLOCK_K=block_k, BLOCK_V=block_v, num_warps=num_warps)
    return o
