"""GLA over a prompt in chunks with the state kept on chip: the inter-chunk half of fla's ``chunk_gla``.

fla's forward (0.6.0) computes per 64-token chunk the cumulative log2 gate ``gc`` (``chunk_local_cumsum``), the
intra-chunk weights ``A`` (``chunk_gla_fwd_intra_gk``), then writes the state at every chunk start
(``chunk_fwd_h``: [B, H, T/64, K, V] in bf16, 1 GB per layer for GLA-1.3B at 32 × 1900) and reads it back for the
output (``chunk_gla_fwd_o_gk``). Here, after fla's ``gc`` and ``A``:

1. ``_prep_kernel`` (one program per chunk and head) applies the decays once: ``qg = q ⊙ 2^gc`` and
   ``kg = k ⊙ 2^(gn - gc)`` in the inputs' dtype, with ``gn`` the chunk's last ``gc`` row;
2. ``_inter_kernel`` (one program per head and block of V) walks the chunks with the ``[K, BV]`` float32 state
   in registers: ``o = scale · qg S + A v`` and ``S ← 2^gn ⊙ S + kgᵀ v``; no chunk state is written.

The roundings are fla's: ``qg``, ``kg``, ``A`` and ``S`` enter the matmuls in the inputs' dtype, the state
accumulates in float32. ``kernels/mamba/reference.py``'s recurrence is the reference (tests run both kernels
under ``TRITON_INTERPRET=1`` with ``gc`` and ``A`` from PyTorch).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _prep_kernel(q_ptr, k_ptr, g_ptr, qg_ptr, kg_ptr, gn_ptr, T, NT, H: tl.constexpr, K: tl.constexpr,
                 BT: tl.constexpr):
    i_t = tl.program_id(0)
    i_bh = tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    rows = i_t * BT + tl.arange(0, BT)
    offs_k = tl.arange(0, K)
    mt = rows < T
    last = tl.minimum(i_t * BT + BT, T) - 1
    base = (i_b * T * H + i_h) * K
    ptrs = base + rows[:, None] * (H * K) + offs_k[None, :]
    gc = tl.load(g_ptr + ptrs, mask=mt[:, None], other=0.0)
    gn = tl.load(g_ptr + base + last * (H * K) + offs_k)
    q = tl.load(q_ptr + ptrs, mask=mt[:, None], other=0.0)
    tl.store(qg_ptr + ptrs, (q * tl.exp2(gc)).to(qg_ptr.dtype.element_ty), mask=mt[:, None])
    k = tl.load(k_ptr + ptrs, mask=mt[:, None], other=0.0)
    tl.store(kg_ptr + ptrs, (k * tl.exp2(gn[None, :] - gc)).to(kg_ptr.dtype.element_ty), mask=mt[:, None])
    tl.store(gn_ptr + (i_bh * NT + i_t) * K + offs_k, gn)


@triton.jit
def _inter_kernel(qg_ptr, kg_ptr, v_ptr, a_ptr, gn_ptr, o_ptr, h_ptr, scale, T, NT, H: tl.constexpr,
                  K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr):
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    offs_k = tl.arange(0, K)
    offs_v = i_v * BV + tl.arange(0, BV)
    offs_i = tl.arange(0, BT)
    mv = offs_v < V
    causal = offs_i[:, None] >= offs_i[None, :]
    base_k = (i_b * T * H + i_h) * K
    base_v = (i_b * T * H + i_h) * V
    base_a = (i_b * T * H + i_h) * BT
    S = tl.zeros([K, BV], dtype=tl.float32)
    for i_t in range(0, NT):
        rows = i_t * BT + offs_i
        mt = rows < T
        qg = tl.load(qg_ptr + base_k + rows[:, None] * (H * K) + offs_k[None, :], mask=mt[:, None], other=0.0)
        o = tl.dot(qg, S.to(qg.dtype)) * scale
        v = tl.load(v_ptr + base_v + rows[:, None] * (H * V) + offs_v[None, :], mask=mt[:, None] & mv[None, :],
                    other=0.0)
        # fla leaves A above the diagonal (and past T) unwritten: mask it
        a = tl.load(a_ptr + base_a + rows[:, None] * (H * BT) + offs_i[None, :],
                    mask=mt[:, None] & causal & mt[None, :], other=0.0)
        o = tl.dot(a.to(v.dtype), v, o)
        tl.store(o_ptr + base_v + rows[:, None] * (H * V) + offs_v[None, :], o.to(o_ptr.dtype.element_ty),
                 mask=mt[:, None] & mv[None, :])
        kg = tl.load(kg_ptr + base_k + rows[:, None] * (H * K) + offs_k[None, :], mask=mt[:, None], other=0.0)
        gn = tl.load(gn_ptr + (i_bh * NT + i_t) * K + offs_k)
        S = S * tl.exp2(gn)[:, None] + tl.dot(tl.trans(kg), v)
    tl.store(h_ptr + i_bh * K * V + offs_k[:, None] * V + offs_v[None, :], S, mask=mv[None, :])


def gla_chunk_inter(q, k, v, gc, A, scale: float, chunk_size: int = 64, block_v: int = 64, num_warps: int = 4,
                    num_stages: int = 1):
    """``q, k [B, T, H, K]``, ``v [B, T, H, V]`` (contiguous, one dtype), ``gc [B, T, H, K]`` float32: the gate's
    cumulative sum within each chunk in log2 units, ``A [B, T, H, chunk]`` float32: the intra-chunk weights with
    ``scale`` applied (fla's ``chunk_local_cumsum(g, 64, scale=1/ln 2)`` and ``chunk_gla_fwd_intra_gk``). Returns
    ``(o [B, T, H, V] in v's dtype, final state [B, H, K, V] float32)``. K must be a power of two (≤ 256).

    Default tiles (H100, GLA-1.3B heads, 32 × 1900, ``benchmarks/gla_chunk.py``): 64-wide V blocks, 4 warps, no
    software pipelining (64 KB of shared memory, so two programs share an SM): with fla's cumsum and A, 2.04 ms per
    layer against 2.77 for fla's ``chunk_gla``; 2 stages 2.24, 8 warps 2.69, 32-wide blocks 2.26."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    assert K == triton.next_power_of_2(K) and K <= 256, f"head key dim {K}: a power of two up to 256"
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    NT = triton.cdiv(T, chunk_size)
    qg, kg = torch.empty_like(q), torch.empty_like(k)
    gn = torch.empty(B, H, NT, K, device=q.device, dtype=torch.float32)
    _prep_kernel[(NT, B * H)](q, k, gc, qg, kg, gn, T, NT, H=H, K=K, BT=chunk_size, num_warps=8)
    o = torch.empty_like(v)
    ht = torch.empty(B, H, K, V, device=q.device, dtype=torch.float32)
    _inter_kernel[(triton.cdiv(V, block_v), B * H)](qg, kg, v, A, gn, o, ht, float(scale), T, NT, H=H, K=K, V=V,
                                                    BT=chunk_size, BV=block_v, num_warps=num_warps,
                                                    num_stages=num_stages)
    return o, ht


def gla_chunk_fla(q, k, v, gk, scale: float, **config):
    """fla's ``chunk_gla`` forward with its chunk states kept on chip: fla's cumsum and intra-chunk weights, then
    :func:`gla_chunk_inter`. ``gk`` the log forget gate (natural log, as ``chunk_gla`` takes it); T > 64."""
    from fla.ops.gla.chunk import chunk_gla_fwd_intra_gk
    from fla.ops.utils.constant import RCP_LN2
    from fla.ops.utils.cumsum import chunk_local_cumsum

    q, k, v, gk = (t.contiguous() for t in (q, k, v, gk))
    gc = chunk_local_cumsum(gk, 64, scale=RCP_LN2)
    A = chunk_gla_fwd_intra_gk(q, k, gc, scale, chunk_size=64)
    return gla_chunk_inter(q, k, v, gc, A, scale, **config)
