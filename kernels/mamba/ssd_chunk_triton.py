"""Mamba-2 SSD prefill, chunk-parallel: three Triton kernels instead of one program walking the whole sequence.

Same math and contract as ``ssd_triton.ssd_prefill_triton`` (which dispatches here with ``config["algo"] ==
"chunked"``). The sequence is cut into chunks of ``Q`` tokens (``Q`` a multiple of the block ``BM``):

1. ``_chunk_state_kernel`` — per (row·head, chunk, channel block): the state the chunk alone leaves,
   ``s_c = Σ_{s∈c} exp(cs_end − cs_s) Δ_s x_s B_sᵀ`` (one fp32 ``[p, n]`` per chunk), and the chunk's total
   log-decay. Every chunk is independent: no sequential walk.
2. ``_state_pass_kernel`` — per (row·head, slice of the state): ``S_{c+1} = exp(total_c) S_c + s_c`` over the
   chunks in order, from the initial state; overwrites ``s_c`` with the state *entering* chunk c and writes
   the final state. Elementwise and bandwidth-bound (the only sequential part, over ``T / Q`` steps).
3. ``_chunk_scan_kernel`` — per (row·head, query block of ``BM`` tokens, channel block): the block's output
   ``y_l = Σ_{s ≤ l, s∈c} (C_l·B_s) exp(cs_l − cs_s) Δ_s x_s + exp(cs_l) C_l S_cᵀ + D x_l``, the key blocks of
   its chunk visited from the diagonal backwards with an fp32 accumulator carried across them (no state is
   carried, so the matmuls of one block do not wait on the previous block's).

Why: the sequential kernel keeps the state in registers and chains four small matmuls per 32-token chunk, so
with two programs per SM it is latency-bound (1.10 ms per layer at Mamba-2-130M widths, batch 32 × 1900, on
an H100 — about 8× its memory floor). Here the only loop-carried value inside a kernel is an accumulator, and
the cost is the chunk states' round trip through memory (``4 p n / Q`` bytes per token and head).

Decays: ``cs`` are log2-domain running sums of ``Δ a ≤ 0`` measured from the chunk start; every exponent
formed is ≤ 0 (masked to -inf above the diagonal before the exp), so nothing overflows however strong the
decay. Walking key blocks backwards lets a query block form ``cs_l − cs_s`` from block-local sums: the offset
of key block j is the sum of the totals of blocks j .. m−1, accumulated as the walk goes. Pads and steps past
T have Δ = 0: no input, no decay. Dot precision as in ``ssd_triton._dot_config``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .ssd_triton import _discretise


@triton.jit
def _block_decay(dt_base, m_base, t0, ii, T, s_dtt, s_mt, a2, dtb, dt_min, dt_max,
                 HAS_DTB: tl.constexpr, DT_SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr, HAS_MASK: tl.constexpr):
    """Δ of the tokens ``t0 + ii`` (0 for pads and past T), their block-local inclusive log2-decay sums ``lcs``
    (≤ 0, non-increasing) and the block's total log2-decay."""
    offs_t = t0 + ii
    mt = offs_t < T
    t64 = offs_t.to(tl.int64)
    dt = tl.load(dt_base + t64 * s_dtt, mask=mt, other=0.0).to(tl.float32)
    if HAS_DTB:
        dt = dt + dtb
    delta = _discretise(dt, dt_min, dt_max, DT_SOFTPLUS, HAS_LIMIT)
    keep = mt
    if HAS_MASK:
        keep = keep & (tl.load(m_base + t64 * s_mt, mask=mt, other=0) != 0)
    delta = tl.where(keep, delta, 0.0)
    la = delta * a2
    return delta, tl.cumsum(la, axis=0), tl.sum(la, axis=0), t64, mt


@triton.jit
def _chunk_state_kernel(
    x_ptr, dt_ptr, a_ptr, b_ptr, dtb_ptr, mask_ptr, st_ptr, tot_ptr,
    T, H, P, N, REP, NC, dt_min, dt_max,
    s_xb, s_xt, s_xh, s_dtb, s_dtt, s_dth, s_bb, s_bt, s_bg, s_mb, s_mt,
    HAS_DTB: tl.constexpr, DT_SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr, HAS_MASK: tl.constexpr,
    Q: tl.constexpr, BK: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    MIX_DOT: tl.constexpr, MIX_PREC: tl.constexpr,
):
    pid_bh, c, pid_p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bi = (pid_bh // H).to(tl.int64)
    hi = pid_bh % H
    hi64 = hi.to(tl.int64)
    gi = (hi // REP).to(tl.int64)
    ii = tl.arange(0, BK)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mp, mn = offs_p < P, offs_n < N
    a2 = tl.load(a_ptr + hi).to(tl.float32) * 1.4426950408889634
    dtb = 0.0
    if HAS_DTB:
        dtb = tl.load(dtb_ptr + hi).to(tl.float32)
    x_base = x_ptr + bi * s_xb + hi64 * s_xh
    dt_base = dt_ptr + bi * s_dtb + hi64 * s_dth
    b_base = b_ptr + bi * s_bb + gi * s_bg
    m_base = mask_ptr + bi * s_mb

    acc = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    off = tl.zeros([BK], dtype=tl.float32)  # Σ of the totals of the blocks after this one (same in every lane)
    for jj in range(0, Q // BK):  # blocks from the chunk's end backwards
        t0 = c * Q + (Q // BK - 1 - jj) * BK
        delta, lcs, tot, t64, mt = _block_decay(dt_base, m_base, t0, ii, T, s_dtt, s_mt, a2, dtb, dt_min, dt_max,
                                                HAS_DTB, DT_SOFTPLUS, HAS_LIMIT, HAS_MASK)
        w = tl.exp2(off + tot - lcs) * delta  # exp(cs_end − cs_s) Δ_s, the exponent ≤ 0
        xt = tl.load(x_base + t64[:, None] * s_xt + offs_p[None, :], mask=mt[:, None] & mp[None, :], other=0.0)
        bt = tl.load(b_base + t64[:, None] * s_bt + offs_n[None, :], mask=mt[:, None] & mn[None, :], other=0.0)
        acc = tl.dot(tl.trans((xt.to(tl.float32) * w[:, None]).to(MIX_DOT)), bt.to(MIX_DOT), acc=acc,
                     input_precision=MIX_PREC)
        off = off + tot
    row = (bi * NC + c) * H + hi64  # chunk states [b, nc, h, p, n]
    tl.store(st_ptr + row * P * N + offs_p[:, None] * N + offs_n[None, :], acc, mask=mp[:, None] & mn[None, :])
    if pid_p == 0:
        tl.store(tot_ptr + (bi * H + hi64) * NC + c + ii, off, mask=ii == 0)


@triton.jit
def _state_pass_kernel(st_ptr, tot_ptr, h0_ptr, ht_ptr, H, PN, NC, HAS_H0: tl.constexpr, BLOCK: tl.constexpr):
    pid_bh, pid = tl.program_id(0), tl.program_id(1)
    bi = (pid_bh // H).to(tl.int64)
    hi64 = (pid_bh % H).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    m = offs < PN
    if HAS_H0:
        S = tl.load(h0_ptr + (bi * H + hi64) * PN + offs, mask=m, other=0.0).to(tl.float32)
    else:
        S = tl.zeros([BLOCK], dtype=tl.float32)
    for c in range(0, NC):
        ptr = st_ptr + ((bi * NC + c) * H + hi64) * PN + offs
        s = tl.load(ptr, mask=m, other=0.0)
        tl.store(ptr, S, mask=m)  # now the state entering chunk c
        S = S * tl.exp2(tl.load(tot_ptr + (bi * H + hi64) * NC + c)) + s
    tl.store(ht_ptr + (bi * H + hi64) * PN + offs, S, mask=m)


@triton.jit
def _chunk_scan_kernel(
    x_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, dtb_ptr, mask_ptr, st_ptr, y_ptr,
    T, H, P, N, REP, NC, dt_min, dt_max,
    s_xb, s_xt, s_xh, s_dtb, s_dtt, s_dth, s_bb, s_bt, s_bg, s_cb, s_ct, s_cg, s_mb, s_mt, s_yb, s_yt, s_yh,
    HAS_D: tl.constexpr, HAS_DTB: tl.constexpr, DT_SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr,
    HAS_MASK: tl.constexpr, Q: tl.constexpr, BM: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    IN_DOT: tl.constexpr, IN_PREC: tl.constexpr, MIX_DOT: tl.constexpr, MIX_PREC: tl.constexpr,
):
    pid_bh, qb, pid_p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bi = (pid_bh // H).to(tl.int64)
    hi = pid_bh % H
    hi64 = hi.to(tl.int64)
    gi = (hi // REP).to(tl.int64)
    c = qb // (Q // BM)  # chunk of this query block, and its index inside the chunk
    mb = qb % (Q // BM)
    ii = tl.arange(0, BM)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mp, mn = offs_p < P, offs_n < N
    a2 = tl.load(a_ptr + hi).to(tl.float32) * 1.4426950408889634
    dtb = 0.0
    if HAS_DTB:
        dtb = tl.load(dtb_ptr + hi).to(tl.float32)
    x_base = x_ptr + bi * s_xb + hi64 * s_xh
    dt_base = dt_ptr + bi * s_dtb + hi64 * s_dth
    b_base = b_ptr + bi * s_bb + gi * s_bg
    c_base = c_ptr + bi * s_cb + gi * s_cg
    m_base = mask_ptr + bi * s_mb

    _, lcs_q, _, tq, mq = _block_decay(dt_base, m_base, qb * BM, ii, T, s_dtt, s_mt, a2, dtb, dt_min, dt_max,
                                           HAS_DTB, DT_SOFTPLUS, HAS_LIMIT, HAS_MASK)
    ct = tl.load(c_base + tq[:, None] * s_ct + offs_n[None, :], mask=mq[:, None] & mn[None, :], other=0.0)
    causal = ii[:, None] >= ii[None, :]
    acc = tl.zeros([BM, BLOCK_P], dtype=tl.float32)
    off = tl.zeros([BM], dtype=tl.float32)  # Σ of the totals of key blocks j .. mb−1 (same in every lane)
    for jj in range(0, mb + 1):  # key blocks of this chunk, from the diagonal (jj = 0) backwards
        delta, lcs, tot, t64, mt = _block_decay(dt_base, m_base, (qb - jj) * BM, ii, T, s_dtt, s_mt, a2, dtb,
                                                dt_min, dt_max, HAS_DTB, DT_SOFTPLUS, HAS_LIMIT, HAS_MASK)
        off = off + tl.where(jj > 0, tot, 0.0)
        # cs_l − cs_s ≤ 0 below the diagonal and in earlier blocks; -inf above it before the exp
        expo = tl.where(causal | (jj > 0), lcs_q[:, None] + off[None, :] - lcs[None, :], float("-inf"))
        bt = tl.load(b_base + t64[:, None] * s_bt + offs_n[None, :], mask=mt[:, None] & mn[None, :], other=0.0)
        xt = tl.load(x_base + t64[:, None] * s_xt + offs_p[None, :], mask=mt[:, None] & mp[None, :], other=0.0)
        cb = tl.dot(ct.to(IN_DOT), tl.trans(bt.to(IN_DOT)), input_precision=IN_PREC)
        xdt = xt.to(tl.float32) * delta[:, None]
        acc = tl.dot((cb * tl.exp2(expo)).to(MIX_DOT), xdt.to(MIX_DOT), acc=acc, input_precision=MIX_PREC)

    # the state entering the chunk, read out and decayed to each query: exp(cs_l) C_l S_cᵀ
    row = (bi * NC + c) * H + hi64
    S = tl.load(st_ptr + row * P * N + offs_p[:, None] * N + offs_n[None, :], mask=mp[:, None] & mn[None, :],
                other=0.0)
    inter = tl.dot(ct.to(MIX_DOT), tl.trans(S.to(MIX_DOT)), input_precision=MIX_PREC)
    acc = acc + inter * tl.exp2(lcs_q + off)[:, None]
    xq = tl.load(x_base + tq[:, None] * s_xt + offs_p[None, :], mask=mq[:, None] & mp[None, :], other=0.0)
    if HAS_D:
        acc = acc + tl.load(d_ptr + hi).to(tl.float32) * xq.to(tl.float32)
    tl.store(y_ptr + bi * s_yb + hi64 * s_yh + tq[:, None] * s_yt + offs_p[None, :],
             acc.to(y_ptr.dtype.element_ty), mask=mq[:, None] & mp[None, :])


def launch_chunked(x, dt, A, B, C, D, dt_bias, mask, initial_state, y, ht, lo, hi, flags, cfg, dummy):
    """Run the three kernels; ``flags`` and the prepared tensors come from ``ssd_prefill_triton``."""
    b, T, h, p = x.shape
    g, n = B.shape[-2:]
    Q, BM = int(cfg["Q"]), int(cfg["BM"])
    if Q % BM or BM < 16 or BM & (BM - 1):
        raise ValueError(f"SSD chunked config: Q ({Q}) must be a multiple of BM ({BM}), a power of two ≥ 16")
    nc = triton.cdiv(T, Q)
    block_p = max(16, min(int(cfg["BLOCK_P"]), triton.next_power_of_2(p)))  # tensor-core tiles: ≥ 16
    block_n = flags["BLOCK_N"]
    states = torch.empty(b, nc, h, p, n, device=x.device, dtype=torch.float32)
    totals = torch.empty(b, h, nc, device=x.device, dtype=torch.float32)
    mask_t = mask if mask is not None else dummy
    s_m = (mask.stride(0), mask.stride(1)) if mask is not None else (0, 0)
    common = dict(HAS_DTB=flags["HAS_DTB"], DT_SOFTPLUS=flags["DT_SOFTPLUS"], HAS_LIMIT=flags["HAS_LIMIT"],
                  HAS_MASK=flags["HAS_MASK"], BLOCK_N=block_n)
    _chunk_state_kernel[(b * h, nc, triton.cdiv(p, block_p))](
        x, dt, A, B, dt_bias if dt_bias is not None else dummy, mask_t, states, totals,
        T, h, p, n, h // g, nc, lo, hi,
        x.stride(0), x.stride(1), x.stride(2), dt.stride(0), dt.stride(1), dt.stride(2),
        B.stride(0), B.stride(1), B.stride(2), *s_m,
        **common, Q=Q, BK=BM, BLOCK_P=block_p, MIX_DOT=flags["MIX_DOT"], MIX_PREC=flags["MIX_PREC"],
        num_warps=int(cfg.get("state_warps", cfg["num_warps"])), num_stages=int(cfg["num_stages"]),
    )
    pn = p * n
    block = min(1024, triton.next_power_of_2(pn))
    _state_pass_kernel[(b * h, triton.cdiv(pn, block))](
        states, totals, initial_state if initial_state is not None else dummy, ht, h, pn, nc,
        HAS_H0=initial_state is not None, BLOCK=block, num_warps=4,
    )
    _chunk_scan_kernel[(b * h, triton.cdiv(T, BM), triton.cdiv(p, block_p))](
        x, dt, A, B, C, D if D is not None else dummy, dt_bias if dt_bias is not None else dummy, mask_t, states, y,
        T, h, p, n, h // g, nc, lo, hi,
        x.stride(0), x.stride(1), x.stride(2), dt.stride(0), dt.stride(1), dt.stride(2),
        B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2), *s_m,
        y.stride(0), y.stride(1), y.stride(2),
        **common, HAS_D=flags["HAS_D"], Q=Q, BM=BM, BLOCK_P=block_p, IN_DOT=flags["IN_DOT"],
        IN_PREC=flags["IN_PREC"], MIX_DOT=flags["MIX_DOT"], MIX_PREC=flags["MIX_PREC"],
        num_warps=int(cfg["num_warps"]), num_stages=int(cfg["num_stages"]),
    )
