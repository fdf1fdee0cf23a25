"""Fused Triton prefill for Based linear attention (causal, Taylor feature map fused in).

Math (reference.py, reference-models.md §2.4): κ(q, k) = 1 + s + s²/2 with s = q·k/√f, and
y_t = Σ_{s≤t} κ_ts v_s / (Σ_{s≤t} κ_ts + ε). f = 16 only (every Based / JRT-RNN checkpoint);
other feature dims fall back to the reference in ``__init__.py``.

Algorithm, per (batch, head, dv block, sequence segment) program, looping over chunks of BT tokens:

* intra-chunk: A = tril(1 + s + s²/2) ⊙ key_mask with s = (q/√f) kᵀ on tensor cores; numerator
  A V, denominator rowsum(A). No features at all.
* inter-chunk: the state holds the 153 symmetric second-order features (reference layout) split
  into two tensor-core-friendly blocks that are never written to global memory:
    - block "A" (128 columns): pairs (i, (i+d) mod 16) for d = 0..7, i = 0..15 (the diagonal d = 0
      and every unordered pair of circular distance 1..7, each exactly once);
    - block "X" (32 columns): the 16 first-order features, the 8 pairs (i, i+8) of circular
      distance 8, the constant feature, 7 zero columns.
  Each feature column is a product P·Q of two "selected" coordinates of q (or k), or of a
  coordinate and 1. The selections are exact 0/1 matmuls ``q @ Sel`` on tensor cores, so building
  the [BT, 160] feature tiles costs two small matmuls per block and no gather. Readout
  ``φ(q) S`` and update ``S += φ(k)ᵀ V`` are then two matmuls per block; the state stays in fp32
  registers for the whole sequence (operands are cast to the dot dtype, bf16 for 16-bit inputs).
* segments: with few (batch, head) pairs the sequence is cut into segments of whole chunks; a
  state-only pass (same kernel, ``COMPUTE_OUT=False``) gives each segment's Σφ(k)vᵀ, a prefix sum
  over segments (torch, tiny) gives each segment its initial state, then the output pass runs all
  segments in parallel.

Tuned options (``config``; defaults in ``_default_config``, measured in benchmarks/README.md):
``BT`` chunk length (64), ``BLOCK_DV`` value columns per program (64), ``num_warps`` (4: one
warpgroup), ``tma`` (tiles by the tensor memory accelerator on Hopper), ``num_stages`` (3 with TMA,
else 2), ``kt`` (key features built transposed, so the update's A operand
comes from registers), ``sel16`` (16-bit inputs: selections and feature products in fp16 with
fp16 accumulators, keys scaled by 1/16 first; half the registers of fp32 tiles; finite for
|k| < 4096 and |q| < 1024 -- fp32 inputs never use it).

The internal state columns carry their own scaling (q scaled by 1/√f, the diagonal weighted ½ on
the key side, 1/16 per key factor with ``sel16``); states cross the kernel boundary in the
reference layout ``BasedState(S [B,H,153,dv], z [B,H,153])`` fp32, converted row by row at
load/store time (`g` factors below), so a prefill by one implementation hands off to a decode by
another.

Masks: ``key_mask [B, T]`` (True = real token) may be any pattern (left padding is the common
case); a masked key contributes nothing to numerator, denominator or state. A mask that is one run
per row (``mask_is_range``) is computed in the kernel from the run's ends instead of read (``key_range``: one
small launch); the state-only pass over such a range reads with TMA exactly the range's rows (chunks start at the
row's first key, descriptors end at its last), so it needs no key mask at all. A masked query row whose visible
keys are all masked gets 0 (as the reference: 0 / ε).
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from .reference import DEFAULT_EPS, BasedState, feature_dim

F_SUPPORTED = 16
D_COMPACT = feature_dim(F_SUPPORTED)  # 153


@triton.jit
def _sel_tables(F: tl.constexpr, SEL_DTYPE: tl.constexpr, TRANS: tl.constexpr):
    """Selection matrices (0/1, [16, n] or transposed [n, 16]) and per-column weights/biases of the
    two feature blocks (see module doc), in the selection dtype."""
    rows = tl.arange(0, F)
    # block A: column r = d*16 + a, pair (a, (a+d) % 16)
    cA = tl.arange(0, 128)
    aA = cA % 16
    dA = cA // 16
    bA = (aA + dA) % 16
    # block X: c < 16 first order (q_c * 1); 16 <= c < 24 pair (c-16, c-8); c == 24 constant
    cX = tl.arange(0, 32)
    pX = tl.where(cX < 16, cX, cX - 16)
    qX = cX - 8
    if TRANS:
        selPA = (aA[:, None] == rows[None, :]).to(tl.float32).to(SEL_DTYPE)
        selQA = (bA[:, None] == rows[None, :]).to(tl.float32).to(SEL_DTYPE)
        selPX = ((pX[:, None] == rows[None, :]) & (cX[:, None] < 24)).to(tl.float32).to(SEL_DTYPE)
        selQX = ((qX[:, None] == rows[None, :]) & (cX[:, None] >= 16) & (cX[:, None] < 24)).to(tl.float32).to(SEL_DTYPE)
    else:
        selPA = (rows[:, None] == aA[None, :]).to(tl.float32).to(SEL_DTYPE)
        selQA = (rows[:, None] == bA[None, :]).to(tl.float32).to(SEL_DTYPE)
        selPX = ((rows[:, None] == pX[None, :]) & (cX[None, :] < 24)).to(tl.float32).to(SEL_DTYPE)
        selQX = ((rows[:, None] == qX[None, :]) & (cX[None, :] >= 16) & (cX[None, :] < 24)).to(tl.float32).to(SEL_DTYPE)
    wA = tl.where(dA == 0, 0.5, 1.0)
    bPX = tl.where(cX == 24, 1.0, 0.0)
    bQX = tl.where((cX < 16) | (cX == 24), 1.0, 0.0)
    return selPA, selQA, wA, selPX, selQX, bPX, bQX


@triton.jit
def _state_rows(scale):
    """Reference-layout row of each internal column and the factor g: S_ref[row] = g * S_int[col]."""
    cA = tl.arange(0, 128)
    aA = cA % 16
    dA = cA // 16
    bA = (aA + dA) % 16
    lo = tl.minimum(aA, bA)
    hi = tl.maximum(aA, bA)
    rowA = 17 + (lo * (31 - lo)) // 2 + hi
    gA = tl.where(dA == 0, scale * 1.4142135623730951, scale)
    cX = tl.arange(0, 32)
    loX = cX - 16
    pairX = 17 + (loX * (31 - loX)) // 2 + (loX + 8)
    rowX = tl.where(cX < 16, cX + 1, tl.where(cX < 24, pairX, 0))
    validX = cX < 25
    rowX = tl.where(validX, rowX, 0)
    gX = tl.where(cX < 16, tl.sqrt(scale), tl.where(cX < 24, scale, 1.0))
    return rowA, gA, rowX, gX, validX


@triton.jit
def _sel_dot(a, b, SEL16: tl.constexpr, PRECISION: tl.constexpr):
    """A 0/1 selection matmul: exact copies of the selected coordinates (fp16 accumulators with
    SEL16, else fp32)."""
    if SEL16:
        return tl.dot(a, b, out_dtype=tl.float16)
    else:
        return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _update(kd, vd, m, SA, SX, zA, zX, selPA, selQA, wA, selPX, selQX, bPX, bQX, ksc,
            DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr, SEL16: tl.constexpr, KT: tl.constexpr):
    """S += φ(k)ᵀ V, z += Σ φ(k) for one chunk (k and v zero at masked / out-of-range positions).
    KT: build the key features transposed ([n, BT]: the update's A operand comes straight from
    registers). SEL16: selections and feature products in fp16 on k/16 (exact selections, half the
    registers; the state then holds features / ``fac``, undone at readout and state I/O)."""
    if SEL16:
        ks = (kd.to(tl.float32) * ksc).to(tl.float16)
        PD: tl.constexpr = tl.float16
    else:
        ks = kd
        PD: tl.constexpr = tl.float32
    if KT:
        kt = tl.trans(ks)  # [16, BT]
        KA = _sel_dot(selPA, kt, SEL16, PRECISION) * _sel_dot(selQA, kt, SEL16, PRECISION)
        KA = KA * wA.to(PD)[:, None]
        KX = (_sel_dot(selPX, kt, SEL16, PRECISION) + bPX.to(PD)[:, None]) * \
             (_sel_dot(selQX, kt, SEL16, PRECISION) + bQX.to(PD)[:, None])
        KX = KX * m.to(PD)[None, :]
        SA = tl.dot(KA.to(DOT_DTYPE), vd, SA, input_precision=PRECISION)
        SX = tl.dot(KX.to(DOT_DTYPE), vd, SX, input_precision=PRECISION)
        zA += tl.sum(KA.to(tl.float32), 1)
        zX += tl.sum(KX.to(tl.float32), 1)
    else:
        KA = _sel_dot(ks, selPA, SEL16, PRECISION) * _sel_dot(ks, selQA, SEL16, PRECISION)
        KA = KA * wA.to(PD)[None, :]
        KX = (_sel_dot(ks, selPX, SEL16, PRECISION) + bPX.to(PD)[None, :]) * \
             (_sel_dot(ks, selQX, SEL16, PRECISION) + bQX.to(PD)[None, :])
        KX = KX * m.to(PD)[:, None]
        SA = tl.dot(tl.trans(KA.to(DOT_DTYPE)), vd, SA, input_precision=PRECISION)
        SX = tl.dot(tl.trans(KX.to(DOT_DTYPE)), vd, SX, input_precision=PRECISION)
        zA += tl.sum(KA.to(tl.float32), 0)
        zX += tl.sum(KX.to(tl.float32), 0)
    return SA, SX, zA, zX


@triton.jit
def _based_chunk_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, m_ptr, rng_ptr,
    si_ptr, zi_ptr, so_ptr, zo_ptr,
    T, seg_len, H,
    sqb, sqt, sqh, skb, skt, skh, svb, svt, svh, sob, sot, soh, smb, smt,
    si_seg, si_b, si_h, zi_seg, zi_b, zi_h,
    so_seg, so_b, so_h, zo_seg, zo_b, zo_h,
    scale, eps,
    DV: tl.constexpr, BLOCK_DV: tl.constexpr, BT: tl.constexpr,
    HAS_MASK: tl.constexpr, HAS_INIT: tl.constexpr, WRITE_STATE: tl.constexpr,
    COMPUTE_OUT: tl.constexpr, HAS_RANGE: tl.constexpr, MASK_RANGE: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    SEL16: tl.constexpr = False, KT: tl.constexpr = False, TMA: tl.constexpr = False,
    TMA_STORE: tl.constexpr = False,
):
    F: tl.constexpr = 16
    pid_v = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)

    cols_f = tl.arange(0, F)
    cols_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    vmask = cols_v < DV
    ii = tl.arange(0, BT)
    cX = tl.arange(0, 32)

    if SEL16:
        SEL_DTYPE: tl.constexpr = tl.float16
        # keys enter the fp16 products as k/16: products stay finite for |k| < 4096 (q/4 products
        # for |q| < 1024); the state then holds Σ (φ(k)/fac) vᵀ with fac = 16 (first order),
        # 256 (pairs), 1 (constant)
        ksc = 0.0625
        facA = tl.full([128], 256.0, tl.float32)
        facX = tl.where(cX < 16, 16.0, tl.where(cX < 24, 256.0, 1.0))
    else:
        SEL_DTYPE: tl.constexpr = DOT_DTYPE
        ksc = 1.0
        facA = tl.full([128], 1.0, tl.float32)
        facX = tl.full([32], 1.0, tl.float32)
    selPA, selQA, wA, selPX, selQX, bPX, bQX = _sel_tables(F, SEL_DTYPE, False)
    if KT:
        tPA, tQA, twA, tPX, tQX, tbPX, tbQX = _sel_tables(F, SEL_DTYPE, True)
    else:
        tPA, tQA, twA, tPX, tQX, tbPX, tbQX = selPA, selQA, wA, selPX, selQX, bPX, bQX
    # Where the reference-layout row map is built changes ptxas's register allocation of the loop: before the loop
    # for the output pass, after it (below, at WRITE_STATE) for the state-only pass (its loop's spill loads / stores
    # per chunk, sm_90: 0 vs 11 without a mask, 3 vs 44 over a key range; H100, N = 32768, B = 16, no mask: 0.70-0.72
    # vs 0.75 ms). For the pass from an initial state, rebuilding it after the loop ran slower (2.75 vs 2.41 ms).
    ROWS_FIRST: tl.constexpr = COMPUTE_OUT or HAS_INIT
    if ROWS_FIRST:
        rowA, gA, rowX, gX, validX = _state_rows(scale)
        gA = gA * facA  # S_ref[row] = g * fac * S_internal[col]
        gX = gX * facX
    if HAS_INIT:
        sbase = si_ptr + pid_s * si_seg + b * si_b + h * si_h
        zbase = zi_ptr + pid_s * zi_seg + b * zi_b + h * zi_h
        SA = tl.load(sbase + rowA[:, None] * DV + cols_v[None, :], mask=vmask[None, :], other=0.0)
        SA = SA / gA[:, None]
        SX = tl.load(sbase + rowX[:, None] * DV + cols_v[None, :],
                     mask=validX[:, None] & vmask[None, :], other=0.0)
        SX = SX / gX[:, None]
        zA = tl.load(zbase + rowA) / gA
        zX = tl.load(zbase + rowX, mask=validX, other=0.0) / gX
    else:
        SA = tl.zeros([128, BLOCK_DV], dtype=tl.float32)
        SX = tl.zeros([32, BLOCK_DV], dtype=tl.float32)
        zA = tl.zeros([128], dtype=tl.float32)
        zX = tl.zeros([32], dtype=tl.float32)

    q_base = q_ptr + b * sqb + h * sqh
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    o_base = o_ptr + b * sob + h * soh
    # seg_len is a whole number of chunks; the last segment may run past T (masked, no effect):
    # every segment runs the same number of iterations, so this costs no wall time.
    t_start = pid_s * seg_len
    c_begin = 0
    c_end = seg_len // BT
    t_end = T  # rows at or past t_end are not keys (masked; by TMA they arrive as zeros)
    if HAS_RANGE or MASK_RANGE:
        key_lo = tl.load(rng_ptr + 2 * b)  # the row's keys: [key_lo, key_hi)
        key_hi = tl.load(rng_ptr + 2 * b + 1)
    # the state-only pass over a key range, by TMA: the sum is order-free, so this segment's chunks start at its
    # first key and its descriptors end at its last, and no key is masked (rows past the end load as zeros, and
    # zero keys add only to the constant feature, which ``m`` masks)
    WINDOW: tl.constexpr = TMA and MASK_RANGE and not COMPUTE_OUT
    if WINDOW:
        t_end = tl.minimum(tl.minimum(key_hi, t_start + seg_len), T)
        t_start = tl.maximum(key_lo, t_start)
        c_end = tl.cdiv(tl.maximum(t_end - t_start, 0), BT)
    if TMA:
        # tensor-memory-accelerator tiles of this (batch, head): one thread issues each copy, rows past T come
        # back as zeros and stores past T are clipped, so no per-thread address or mask tensors stay live
        t_rows = tl.maximum(t_end, 1)
        q_desc = tl.make_tensor_descriptor(q_base, shape=[T, F], strides=[sqt, 1], block_shape=[BT, F])
        k_desc = tl.make_tensor_descriptor(k_base, shape=[t_rows, F], strides=[skt, 1], block_shape=[BT, F])
        v_desc = tl.make_tensor_descriptor(v_base, shape=[t_rows, DV], strides=[svt, 1], block_shape=[BT, BLOCK_DV])
        if TMA_STORE:
            o_desc = tl.make_tensor_descriptor(o_base, shape=[T, DV], strides=[sot, 1], block_shape=[BT, BLOCK_DV])
    if HAS_RANGE and not WINDOW:
        # state-only pass over a sparse mask (PLA encoder prefix): only the chunks between the row's first and
        # last key run (a branch around the update inside the loop spilled twice the registers)
        lo = tl.maximum(key_lo - t_start, 0)
        hi = tl.minimum(key_hi - t_start, seg_len)
        c_begin = lo // BT
        c_end = tl.where(hi > lo, (hi + BT - 1) // BT, c_begin)
    for c in range(c_begin, c_end):
        offs_t = t_start + c * BT + ii
        tmask = offs_t < t_end
        offs_t64 = offs_t.to(tl.int64)
        if HAS_MASK:
            m = tl.load(m_ptr + b * smb + offs_t64 * smt, mask=tmask, other=0).to(tl.float32)
        elif MASK_RANGE and not WINDOW:
            # a contiguous mask, from positions: no load, and no layout conversions of a loaded one
            m = ((offs_t >= key_lo) & (offs_t < key_hi)).to(tl.float32)
        else:
            m = tmask.to(tl.float32)
        if TMA:
            kf = k_desc.load([t_start + c * BT, 0])
            vf = v_desc.load([t_start + c * BT, pid_v * BLOCK_DV])
        else:
            kf = tl.load(k_base + offs_t64[:, None] * skt + cols_f[None, :], mask=tmask[:, None], other=0.0)
            vf = tl.load(v_base + offs_t64[:, None] * svt + cols_v[None, :],
                         mask=tmask[:, None] & vmask[None, :], other=0.0)
        if (HAS_MASK or MASK_RANGE) and not WINDOW:
            # zero keys zero every key feature but the constant one, which the update multiplies by the mask
            # (and the intra-chunk weights are masked): V needs no mask, so its tile goes to the tensor cores
            # as loaded instead of through registers (the state pass with a mask ran 1.31 vs 0.75 ms)
            kd = tl.where(m[:, None] > 0, kf, 0.0).to(DOT_DTYPE)
        else:  # out-of-range rows are already loaded as 0
            kd = kf.to(DOT_DTYPE)
        vd = vf.to(DOT_DTYPE)

        if COMPUTE_OUT:
            if TMA:
                qf = q_desc.load([t_start + c * BT, 0])
            else:
                qf = tl.load(q_base + offs_t64[:, None] * sqt + cols_f[None, :], mask=tmask[:, None], other=0.0)
            qd = (qf.to(tl.float32) * scale).to(DOT_DTYPE)
            qsel = qd.to(SEL_DTYPE)
            # inter-chunk readout φ(q) S with the state before this chunk
            QA = _sel_dot(qsel, selPA, SEL16, PRECISION) * _sel_dot(qsel, selQA, SEL16, PRECISION)
            QX = (_sel_dot(qsel, selPX, SEL16, PRECISION) + bPX.to(QA.dtype)[None, :]) * \
                 (_sel_dot(qsel, selQX, SEL16, PRECISION) + bQX.to(QA.dtype)[None, :])
            acc = tl.dot(QX.to(DOT_DTYPE), (SX * facX[:, None]).to(DOT_DTYPE), input_precision=PRECISION)
            acc = tl.dot(QA.to(DOT_DTYPE), (SA * facA[:, None]).to(DOT_DTYPE), acc, input_precision=PRECISION)
            den = tl.sum(QX.to(tl.float32) * (zX * facX)[None, :], 1) + \
                tl.sum(QA.to(tl.float32) * (zA * facA)[None, :], 1)
            # intra-chunk quadratic form
            s = tl.dot(qd, tl.trans(kd), input_precision=PRECISION)
            a = 1.0 + s + 0.5 * s * s
            keep = (ii[:, None] >= ii[None, :]) & (m[None, :] > 0)
            a = tl.where(keep, a, 0.0)
            den += tl.sum(a, 1)
            acc = tl.dot(a.to(DOT_DTYPE), vd, acc, input_precision=PRECISION)
            out = acc / (den[:, None] + eps)
            if TMA_STORE:
                o_desc.store([t_start + c * BT, pid_v * BLOCK_DV], out.to(o_ptr.dtype.element_ty))
            else:
                tl.store(o_base + offs_t64[:, None] * sot + cols_v[None, :], out.to(o_ptr.dtype.element_ty),
                         mask=tmask[:, None] & vmask[None, :])

        # state update with this chunk's keys
        SA, SX, zA, zX = _update(kd, vd, m, SA, SX, zA, zX, tPA, tQA, twA, tPX, tQX,
                                 tbPX, tbQX, ksc, DOT_DTYPE, PRECISION, SEL16, KT)

    if WRITE_STATE:
        if not ROWS_FIRST:
            rowA, gA, rowX, gX, validX = _state_rows(scale)
            gA = gA * facA
            gX = gX * facX
        sbase_o = so_ptr + pid_s * so_seg + b * so_b + h * so_h
        tl.store(sbase_o + rowA[:, None] * DV + cols_v[None, :], SA * gA[:, None], mask=vmask[None, :])
        tl.store(sbase_o + rowX[:, None] * DV + cols_v[None, :], SX * gX[:, None],
                 mask=validX[:, None] & vmask[None, :])
        if pid_v == 0:
            zbase_o = zo_ptr + pid_s * zo_seg + b * zo_b + h * zo_h
            tl.store(zbase_o + rowA, zA * gA)
            tl.store(zbase_o + rowX, zX * gX, mask=validX)


# ----------------------------------------------------------------------------------------- host
_DOT_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.bfloat16, torch.float32: tl.float32}


def supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    return (
        q.dim() == 4 and q.shape[-1] == F_SUPPORTED and k.shape == q.shape
        and v.shape[:3] == q.shape[:3] and 1 <= v.shape[-1] <= 256
        and q.dtype in _DOT_DTYPES and k.dtype == q.dtype and v.dtype in _DOT_DTYPES
    )


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


LAST_KERNEL = None  # the compiled kernel of the last launch (benchmarks read n_regs / n_spills)


def _default_config(dv: int, dtype: torch.dtype):
    """Measured on an H100 (benchmarks/README.md): chunks of 64 tokens, one warpgroup, key features
    built transposed, fp16 selections for 16-bit inputs. dv > 64 is split in blocks of 64 (one
    [160, 128] fp32 state per program would spill). A ``maxnreg`` key (register cap) reaches the launch, for
    tuning runs: capped at 168 / 200 registers the kernel ran 2.1 / 1.5x slower (spills; benchmarks/README.md).

    ``tma``: tiles moved by the tensor memory accelerator ("auto": on Hopper and later, and under the
    interpreter, whenever the tensors' strides allow it; True / False / "loads" force it). ``num_stages``
    None: 3 with TMA (H100, N = 32768, B = 16: 4.32 ms against 4.97 with 2 and 5.65 for the pointer loads
    with 2), else 2 (pointer loads: 3 stages measured slower, 5.96 ms)."""
    block_dv = max(16, min(64, triton.next_power_of_2(dv)))
    if dtype == torch.float32:
        cfg = dict(BT=64, BLOCK_DV=block_dv, num_warps=4, num_stages=1, kt=True, sel16=False, tma=False)
    else:
        cfg = dict(BT=64, BLOCK_DV=block_dv, num_warps=4, num_stages=None, kt=True, sel16=True, tma="auto")
    override = os.environ.get("JRT_EVAL_BASED_CONFIG")  # JSON, for tuning runs
    if override:
        cfg.update(json.loads(override))
    return cfg


def _config(dv: int, dtype: torch.dtype, config: Optional[dict]) -> dict:
    cfg = dict(_default_config(dv, dtype), **(config or {}))
    cfg.setdefault("num_warps", 8 if cfg["BT"] >= 128 else 4)
    return cfg


def interpreting() -> bool:
    """True when the kernels were built by Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return type(_based_chunk_kernel).__name__ == "InterpretedFunction"


def _dot_config(dtype: torch.dtype):
    """(dot operand dtype, input_precision). fp32 inputs: 3xTF32, about fp32 accuracy on tensor
    cores (the 0/1 selections stay exact to ~2^-22). 16-bit inputs: bf16 operands (fp16 inputs too:
    an fp16 copy of a long-sequence state can overflow), fp32 accumulation. Triton's CPU interpreter
    cannot multiply bf16 (it matmuls the raw uint16 bits), so there every dot runs in fp32."""
    if interpreting() or dtype == torch.float32:
        return tl.float32, ("ieee" if interpreting() else "tf32x3")
    return _DOT_DTYPES[dtype], "ieee"


def _launch(q, k, v, out, mask_u8, init, state_out, T, seg_len, n_seg, scale, eps,
            compute_out, rng, range_loop, cfg):
    """One launch. ``mask_u8`` [B, T]: a key mask read chunk by chunk; ``rng`` [B, 2] int32 (``key_range``): each
    row's keys, as a mask when ``mask_u8`` is None and / or as loop bounds (``range_loop``, state pass)."""
    B, _, H, _ = k.shape
    dv = v.shape[-1]
    block_dv = cfg["BLOCK_DV"]
    n_v = triton.cdiv(dv, block_dv)
    dot_dtype, precision = _dot_config(k.dtype)
    if q is None:
        q = k
    if out is None:
        out = v  # never written (COMPUTE_OUT=False)
    m_arg = mask_u8 if mask_u8 is not None else k
    smb, smt = (mask_u8.stride(0), mask_u8.stride(1)) if mask_u8 is not None else (0, 0)

    def st(x, per_seg):  # state strides (seg, b, h); seg stride 0 = one state shared by all segments
        if x is None:
            return (k, 0, 0, 0)
        if per_seg:
            return (x, x.stride(0), x.stride(1), x.stride(2))
        return (x, 0, x.stride(0), x.stride(1))

    init_seg = init is not None and init[0].dim() == 5
    out_seg = state_out is not None and state_out[0].dim() == 5
    si, si_seg, si_b, si_h = st(init[0] if init is not None else None, init_seg)
    zi, zi_seg, zi_b, zi_h = st(init[1] if init is not None else None, init_seg)
    so, so_seg, so_b, so_h = st(state_out[0] if state_out is not None else None, out_seg)
    zo, zo_seg, zo_b, zo_h = st(state_out[1] if state_out is not None else None, out_seg)
    grid = (n_v, n_seg, B * H)
    sel16 = cfg.get("sel16", False) and (dot_dtype != tl.float32 or cfg.get("sel16") == "force")
    tma = cfg.get("tma", False)
    use_tma = (_tma_hardware(k.device) if tma == "auto" else bool(tma)) and _tma_ok(q, k, v, out)
    extra = dict(SEL16=bool(sel16), KT=bool(cfg.get("kt", False)), TMA=use_tma,
                 TMA_STORE=use_tma and tma != "loads")
    num_stages = cfg.get("num_stages") or (3 if use_tma else 2)
    if use_tma:
        _ensure_allocator()
    global LAST_KERNEL
    args = (
        q, k, v, out, m_arg, rng if rng is not None else m_arg, si, zi, so, zo,
        T, seg_len, H,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2), smb, smt,
        si_seg, si_b, si_h, zi_seg, zi_b, zi_h, so_seg, so_b, so_h, zo_seg, zo_b, zo_h,
        scale, eps,
    )
    flags = dict(
        DV=dv, BLOCK_DV=block_dv, BT=cfg["BT"],
        HAS_MASK=mask_u8 is not None, HAS_INIT=init is not None, WRITE_STATE=state_out is not None,
        COMPUTE_OUT=compute_out, HAS_RANGE=range_loop and rng is not None,
        MASK_RANGE=rng is not None and mask_u8 is None, DOT_DTYPE=dot_dtype, PRECISION=precision, **extra,
    )
    try:
        LAST_KERNEL = _based_chunk_kernel[grid](*args, **flags, num_warps=cfg["num_warps"],
                                                num_stages=num_stages,
                                                **({"maxnreg": cfg["maxnreg"]} if cfg.get("maxnreg") else {}))
    except OutOfResources:
        # a tuned config that does not fit this GPU / dtype (fp32 tiles take twice the shared
        # memory): the smallest one-warpgroup config always fits. Same chunking of the sequence
        # is not required: chunks only tile each segment, seg_len stays a multiple of BT.
        flags["BT"] = 32 if seg_len % 64 else 64
        LAST_KERNEL = _based_chunk_kernel[grid](*args, **flags, num_warps=4, num_stages=1)


def _tma_hardware(device: torch.device) -> bool:
    """The tensor memory accelerator exists from Hopper (sm_90) on; the interpreter emulates it."""
    if interpreting():
        return True
    if device.type != "cuda":
        from ..aot import capture_arch  # compiling ahead of time for a GPU target (kernels/aot.py)

        return (capture_arch() or 0) >= 90
    return torch.cuda.get_device_capability(device)[0] >= 9


def _tma_ok(*tensors: torch.Tensor) -> bool:
    """Tensor-memory-accelerator tiles need each (batch, head) base and every row stride on 16 bytes."""
    for x in tensors:
        es = x.element_size()
        if x.stride(-1) != 1 or x.data_ptr() % 16 or any((s * es) % 16 for s in x.stride()[:-1]):
            return False
    return True


def _scratch(size: int, alignment: int, stream):
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _ensure_allocator():
    """Descriptors built in the kernel need a small global scratch per program; Triton asks the process-wide
    allocator for it. Set one (torch memory) unless the caller already has."""
    from triton.runtime import _allocation

    if isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        triton.set_allocator(_scratch)


def _contig_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _mask_u8(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if mask is None:
        return None
    mask = mask.to(torch.bool)
    if mask.stride(-1) != 1:
        mask = mask.contiguous()
    return mask.view(torch.uint8)


def pick_segments(B: int, H: int, n_v: int, T: int, BT: int, device: torch.device,
                  min_seg_tokens: int = 1024) -> int:
    """Sequence segments so that programs fill the GPU: 1 when B·H·n_v already covers the SMs."""
    base = B * H * n_v
    sms = _num_sms(device)
    if base >= sms:
        return 1
    n_chunks = triton.cdiv(T, BT)
    want = triton.cdiv(2 * sms, base)
    max_seg = max(1, n_chunks * BT // min_seg_tokens)
    return max(1, min(want, max_seg, n_chunks))


def _segments(B: int, T: int, H: int, dv: int, cfg: dict, device: torch.device, n_seg: Optional[int]):
    """(number of sequence segments, segment length: whole chunks); ``n_seg`` None: ``pick_segments``."""
    if n_seg is None:
        n_seg = pick_segments(B, H, triton.cdiv(dv, cfg["BLOCK_DV"]), T, cfg["BT"], device)
    n_chunks = triton.cdiv(T, cfg["BT"])
    n_seg = max(1, min(n_seg, n_chunks))
    seg_len = triton.cdiv(n_chunks, n_seg) * cfg["BT"]
    return triton.cdiv(T, seg_len), seg_len


@triton.jit
def _key_range_kernel(m_ptr, r_ptr, T, smb, BLOCK: tl.constexpr):
    """One row per program: its first key position and one past its last, or (0, 0)."""
    b = tl.program_id(0).to(tl.int64)
    first = tl.full([BLOCK], 2147483647, tl.int32)
    last = tl.zeros([BLOCK], tl.int32)
    for t0 in range(0, T, BLOCK):
        t = t0 + tl.arange(0, BLOCK)
        m = tl.load(m_ptr + b * smb + t, mask=t < T, other=0) != 0
        first = tl.minimum(first, tl.where(m, t, 2147483647))
        last = tl.maximum(last, tl.where(m, t + 1, 0))
    lo = tl.min(first, 0)
    hi = tl.max(last, 0)
    tl.store(r_ptr + 2 * b, tl.where(hi > 0, lo, 0))
    tl.store(r_ptr + 2 * b + 1, hi)


def key_range(mask_u8: torch.Tensor) -> torch.Tensor:
    """[B, 2] int32: each row's first key position and one past its last (0, 0 for a row without keys). On the GPU
    one launch (the eight small torch ops it replaced took 0.15 ms at B = 16, T = 32768 on an H100)."""
    B, T = mask_u8.shape
    if mask_u8.device.type == "cuda" or interpreting():
        m = mask_u8 if mask_u8.dtype == torch.uint8 and mask_u8.stride(-1) == 1 else _mask_u8(mask_u8)
        out = torch.empty(B, 2, dtype=torch.int32, device=m.device)
        if B:
            _key_range_kernel[(B,)](m, out, T, m.stride(0), BLOCK=4096, num_warps=8)
        return out
    m = mask_u8.to(torch.bool)
    has = m.any(1)
    first = torch.argmax(m.to(torch.uint8), 1)
    last = T - torch.argmax(m.flip(1).to(torch.uint8), 1)
    return torch.stack([torch.where(has, first, 0), torch.where(has, last, 0)], 1).to(torch.int32).contiguous()


def _masks(key_mask: Optional[torch.Tensor], mask_is_range: bool, need_range: bool = False):
    """(mask read by the kernel, key ranges or None): a contiguous mask travels as its rows' ranges only."""
    mask_u8 = _mask_u8(key_mask)
    if mask_u8 is None:
        return None, None
    if mask_is_range:
        return None, key_range(mask_u8)
    return mask_u8, (key_range(mask_u8) if need_range else None)


def segment_states(k, v, mask_u8, rng, T, n_seg, seg_len, scale, cfg, skip_empty=False):
    """Per-segment Σφ(k)vᵀ, Σφ(k) in the reference layout: [n_seg, B, H, D, dv], [n_seg, B, H, D].
    ``skip_empty``: visit only the chunks between each row's first and last key (``rng``; sparse masks)."""
    B, _, H, _ = k.shape
    dv = v.shape[-1]
    S = torch.empty(n_seg, B, H, D_COMPACT, dv, device=k.device, dtype=torch.float32)
    z = torch.empty(n_seg, B, H, D_COMPACT, device=k.device, dtype=torch.float32)
    _launch(None, k, v, None, mask_u8, None, (S, z), T, seg_len, n_seg, scale, 0.0,
            compute_out=False, rng=rng, range_loop=skip_empty, cfg=cfg)
    return S, z


def based_prefill_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: Optional[torch.Tensor] = None,
    initial_state: Optional[BasedState] = None,
    output_final_state: bool = False,
    eps: float = DEFAULT_EPS,
    n_seg: Optional[int] = None,
    config: Optional[dict] = None,
    out: Optional[torch.Tensor] = None,
    mask_is_range: bool = False,
):
    """Same contract as ``reference.based_attention_chunked`` (compact state), fused on the GPU.

    ``n_seg`` overrides the number of sequence segments (None: enough to fill the GPU), ``config``
    the tile config (BT, BLOCK_DV, num_warps, num_stages), ``out`` an output buffer [B, T, H, dv].
    ``mask_is_range``: the caller promises that each row of ``key_mask`` is True on one contiguous run (left or
    right padding, a prefix); the kernel then builds the mask from the run's ends instead of reading it (faster;
    a mask with holes would be read as its run from first to last key).
    """
    assert supported(q, k, v), "based_prefill_triton: f must be 16 and dtypes fp32/bf16/fp16"
    B, T, H, f = q.shape
    dv = v.shape[-1]
    q, k, v = _contig_last(q), _contig_last(k), _contig_last(v)
    cfg = _config(dv, v.dtype, config)
    scale = 1.0 / math.sqrt(f)
    mask_u8, rng = _masks(key_mask, mask_is_range)
    if out is None:
        out = torch.empty(B, T, H, dv, device=v.device, dtype=v.dtype)
    assert out.shape == (B, T, H, dv) and out.dtype == v.dtype and out.stride(-1) == 1
    init = None
    if initial_state is not None:
        init = (initial_state.S.to(torch.float32).contiguous(), initial_state.z.to(torch.float32).contiguous())
    n_seg, seg_len = _segments(B, T, H, dv, cfg, q.device, n_seg)

    if n_seg == 1:
        state = None
        if output_final_state:
            state = (torch.empty(B, H, D_COMPACT, dv, device=v.device, dtype=torch.float32),
                     torch.empty(B, H, D_COMPACT, device=v.device, dtype=torch.float32))
        _launch(q, k, v, out, mask_u8, init, state, T, seg_len, 1, scale, eps,
                compute_out=True, rng=rng, range_loop=False, cfg=cfg)
        return out, (BasedState(*state) if output_final_state else None)

    Sseg, zseg = segment_states(k, v, mask_u8, rng, T, n_seg, seg_len, scale, cfg)
    Sinit = torch.cumsum(Sseg, 0)
    zinit = torch.cumsum(zseg, 0)
    final = None
    if output_final_state:
        Sf, zf = Sinit[-1].clone(), zinit[-1].clone()
        if init is not None:
            Sf += init[0]
            zf += init[1]
        final = BasedState(Sf, zf)
    # exclusive prefix: segment j starts from the sum of segments < j (+ the caller's initial state)
    Sinit = torch.roll(Sinit, 1, 0)
    zinit = torch.roll(zinit, 1, 0)
    Sinit[0] = 0
    zinit[0] = 0
    if init is not None:
        Sinit += init[0]
        zinit += init[1]
    _launch(q, k, v, out, mask_u8, (Sinit, zinit), None, T, seg_len, n_seg, scale, eps,
            compute_out=True, rng=rng, range_loop=False, cfg=cfg)
    return out, final


def state_pass_config(dv: int, dtype: torch.dtype, config: Optional[dict] = None) -> dict:
    """Tile config of the state-only pass: ``config``, else ``JRT_EVAL_BASED_STATE_CONFIG`` (JSON), over the
    prefill's default with chunks of 128 for 16-bit inputs. Measured on an H100 (``prefill.py --tune-state``,
    N=32768, B=16, 2026-11-23): 128-token chunks with one warpgroup 0.874 ms, the prefill's 64 1.087 ms; 8 warps
    or 256-token chunks were slower."""
    if config is None and os.environ.get("JRT_EVAL_BASED_STATE_CONFIG"):
        config = json.loads(os.environ["JRT_EVAL_BASED_STATE_CONFIG"])
    base = {} if dtype == torch.float32 else {"BT": 128, "num_warps": 4}
    return _config(dv, dtype, {**base, **(config or {})})


def state_from_keys_triton(
    k: torch.Tensor, v: torch.Tensor, key_mask: Optional[torch.Tensor] = None,
    n_seg: Optional[int] = None, config: Optional[dict] = None, skip_empty: bool = True,
    mask_is_range: bool = False,
) -> BasedState:
    """Non-causal Σφ(k)vᵀ, Σφ(k) over the (unmasked) positions (PLA encoder state), reference layout.
    ``mask_is_range``: as in ``based_prefill_triton``.

    Its tile config may differ from the prefill's: this pass has no intra-chunk quadratic block, so longer
    chunks cost it nothing extra. ``config`` None: the prefill default, or ``JRT_EVAL_BASED_STATE_CONFIG``
    (JSON, for tuning runs: ``benchmarks/prefill.py --tune-state``)."""
    B, T, H, f = k.shape
    dv = v.shape[-1]
    k, v = _contig_last(k), _contig_last(v)
    cfg = state_pass_config(dv, v.dtype, config)
    scale = 1.0 / math.sqrt(f)
    mask_u8, rng = _masks(key_mask, mask_is_range, need_range=skip_empty)
    n_seg, seg_len = _segments(B, T, H, dv, cfg, k.device, n_seg)
    S, z = segment_states(k, v, mask_u8, rng, T, n_seg, seg_len, scale, cfg, skip_empty=skip_empty)
    if n_seg == 1:
        return BasedState(S[0], z[0])
    return BasedState(S.sum(0), z.sum(0))
