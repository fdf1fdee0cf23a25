"""Triton kernels for Mamba-1: the prefill selective scan and the one-token state update.

Both fuse what surrounds the recurrence: ``Δ = softplus(dt + dt_bias)`` (float32), the padding mask (a
masked step has Δ = 0: no decay, no input), the ``D`` skip and the ``silu(z)`` gate, so the model feeds
them the raw projections. Inputs stay in ``[b, T, d]`` layout (the slices of the in_proj / x_proj outputs
are read in place, only the last dimension must be contiguous); the state is float32.

Prefill grid: one program per (row, block of ``BLOCK_D`` channels); it keeps the ``[BLOCK_D, n]`` state in
registers and walks the sequence, so memory traffic is one read of each input and one write of ``y``.
Tested against ``reference.py`` (tests/test_kernels_mamba.py, under ``TRITON_INTERPRET=1`` on CPU) and on
GPU by benchmarks/gpu_check_ssm.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_LOG2E = 1.4426950408889634


@triton.jit
def _softplus(v):
    # log(1 + e^v), exact near 0 without log1p: log(w) · u / (w − 1) with w = 1 + u (Goldberg's trick)
    u = tl.exp(tl.minimum(v, 20.0))
    w = 1.0 + u
    exact = w == 1.0
    lp = tl.where(exact, u, tl.log(w) * (u / tl.where(exact, 1.0, w - 1.0)))
    return tl.where(v > 20.0, v, lp)


@triton.jit
def _scan_fwd_kernel(
    x_ptr, dt_ptr, z_ptr, b_ptr, c_ptr, a_ptr, d_ptr, dtb_ptr, mask_ptr, h0_ptr, y_ptr, ht_ptr,
    T, DM, N,
    s_xb, s_xt, s_dtb, s_dtt, s_zb, s_zt, s_bb, s_bt, s_cb, s_ct, s_mb, s_mt, s_yb, s_yt,
    HAS_Z: tl.constexpr, HAS_D: tl.constexpr, HAS_DTB: tl.constexpr, HAS_MASK: tl.constexpr,
    HAS_H0: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    md = offs_d < DM
    mn = offs_n < N
    mdn = md[:, None] & mn[None, :]
    a2 = tl.load(a_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mdn, other=0.0).to(tl.float32) * 1.4426950408889634
    if HAS_D:
        dv = tl.load(d_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    if HAS_DTB:
        dtb = tl.load(dtb_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    state_off = pid_b * DM * N + offs_d[:, None] * N + offs_n[None, :]
    if HAS_H0:
        h = tl.load(h0_ptr + state_off, mask=mdn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    x_p = x_ptr + pid_b * s_xb + offs_d
    dt_p = dt_ptr + pid_b * s_dtb + offs_d
    z_p = z_ptr + pid_b * s_zb + offs_d
    b_p = b_ptr + pid_b * s_bb + offs_n
    c_p = c_ptr + pid_b * s_cb + offs_n
    y_p = y_ptr + pid_b * s_yb + offs_d
    m_p = mask_ptr + pid_b * s_mb
    # software pipelining by hand: the loads of step t+1 are issued before the math of step t (they do not
    # depend on the state), so their latency overlaps the recurrence instead of stalling every step
    x = tl.load(x_p, mask=md, other=0.0)
    dt = tl.load(dt_p, mask=md, other=0.0)
    bt = tl.load(b_p, mask=mn, other=0.0)
    ct = tl.load(c_p, mask=mn, other=0.0)
    if HAS_Z:
        z = tl.load(z_p, mask=md, other=0.0)
    if HAS_MASK:
        keep = tl.load(m_p)
    for t in range(T):
        more = t + 1 < T
        x_n = tl.load(x_p + (t + 1) * s_xt, mask=md & more, other=0.0)
        dt_n = tl.load(dt_p + (t + 1) * s_dtt, mask=md & more, other=0.0)
        bt_n = tl.load(b_p + (t + 1) * s_bt, mask=mn & more, other=0.0)
        ct_n = tl.load(c_p + (t + 1) * s_ct, mask=mn & more, other=0.0)
        if HAS_Z:
            z_n = tl.load(z_p + (t + 1) * s_zt, mask=md & more, other=0.0)
        if HAS_MASK:
            keep_n = tl.load(m_p + (t + 1) * s_mt, mask=more, other=0)

        xf = x.to(tl.float32)
        dtf = dt.to(tl.float32)
        if HAS_DTB:
            dtf = dtf + dtb
        delta = _softplus(dtf)
        if HAS_MASK:
            delta = tl.where(keep != 0, delta, 0.0)
        h = h * tl.exp2(delta[:, None] * a2) + (delta * xf)[:, None] * bt.to(tl.float32)[None, :]
        y = tl.sum(h * ct.to(tl.float32)[None, :], axis=1)
        if HAS_D:
            y = y + dv * xf
        if HAS_Z:
            zf = z.to(tl.float32)
            y = y * zf * tl.sigmoid(zf)
        tl.store(y_p + t * s_yt, y.to(y_ptr.dtype.element_ty), mask=md)

        x = x_n
        dt = dt_n
        bt = bt_n
        ct = ct_n
        if HAS_Z:
            z = z_n
        if HAS_MASK:
            keep = keep_n
    tl.store(ht_ptr + state_off, h, mask=mdn)


@triton.jit
def _state_update_kernel(
    state_ptr, x_ptr, dt_ptr, z_ptr, b_ptr, c_ptr, a_ptr, d_ptr, dtb_ptr, y_ptr,
    DM, N, s_x, s_dt, s_z, s_b, s_c, s_y,
    HAS_Z: tl.constexpr, HAS_D: tl.constexpr, HAS_DTB: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    md = offs_d < DM
    mn = offs_n < N
    mdn = md[:, None] & mn[None, :]
    state_off = pid_b * DM * N + offs_d[:, None] * N + offs_n[None, :]
    h = tl.load(state_ptr + state_off, mask=mdn, other=0.0).to(tl.float32)  # a 16-bit state: float32 math
    a2 = tl.load(a_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mdn, other=0.0).to(tl.float32) * 1.4426950408889634
    x = tl.load(x_ptr + pid_b * s_x + offs_d, mask=md, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + pid_b * s_dt + offs_d, mask=md, other=0.0).to(tl.float32)
    if HAS_DTB:
        dt = dt + tl.load(dtb_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    delta = _softplus(dt)
    bt = tl.load(b_ptr + pid_b * s_b + offs_n, mask=mn, other=0.0).to(tl.float32)
    ct = tl.load(c_ptr + pid_b * s_c + offs_n, mask=mn, other=0.0).to(tl.float32)
    h = h * tl.exp2(delta[:, None] * a2) + (delta * x)[:, None] * bt[None, :]
    tl.store(state_ptr + state_off, h.to(state_ptr.dtype.element_ty), mask=mdn)
    y = tl.sum(h * ct[None, :], axis=1)
    if HAS_D:
        y = y + tl.load(d_ptr + offs_d, mask=md, other=0.0).to(tl.float32) * x
    if HAS_Z:
        z = tl.load(z_ptr + pid_b * s_z + offs_d, mask=md, other=0.0).to(tl.float32)
        y = y * z * tl.sigmoid(z)
    tl.store(y_ptr + pid_b * s_y + offs_d, y.to(y_ptr.dtype.element_ty), mask=md)


STATE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # of a decode state (16-bit: float32 math)


def _last_contiguous(t):
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def row_align(*strides: int) -> int:
    """The largest of 8, 4, 2, 1 that divides every row stride (in elements). Kernels that read rows of a strided
    slice take it as a constexpr ``ROW_ALIGN`` and the strides divided by it, and multiply back inside, so that
    Triton knows every row offset is a multiple of it: it only specialises integer arguments divisible by 16, and
    rows of Mamba-2-130M's 3352-wide in_proj output (8 · 419) were read one 16-bit element per instruction
    (``LDG.E.U16``) instead of 16 bytes (``LDG.E.128``). (``tl.multiple_of`` on the scalar stride did not change
    the SASS, Triton 3.6.)"""
    for a in (8, 4, 2):
        if all(int(s) % a == 0 for s in strides):
            return a
    return 1


def selective_scan_triton(x, dt, A, B, C, D=None, z=None, dt_bias=None, mask=None, initial_state=None,
                          out_dtype=None, block_d: int = 32, num_warps: int = 2):
    """Mamba-1 prefill scan. ``x, dt, z: [b, T, d]``; ``B, C: [b, T, n]``; ``A: [d, n]`` (negative);
    ``D, dt_bias: [d]``; ``mask: [b, T]``; ``initial_state: [b, d, n]``.
    Returns ``(y [b, T, d] in out_dtype (default x.dtype), final state [b, d, n] float32)``."""
    x, dt, z, B, C = (_last_contiguous(t) for t in (x, dt, z, B, C))
    b, T, d = x.shape
    n = A.shape[-1]
    A = A.float().contiguous()
    y = torch.empty(b, T, d, device=x.device, dtype=out_dtype or x.dtype)
    if T == 0:
        h = torch.zeros(b, d, n, device=x.device) if initial_state is None else initial_state.float().clone()
        return y, h
    ht = torch.empty(b, d, n, device=x.device, dtype=torch.float32)
    if mask is not None:
        mask = mask.to(torch.int32)
    if initial_state is not None:
        initial_state = initial_state.float().contiguous()
    dummy = A
    grid = (b, triton.cdiv(d, block_d))
    _scan_fwd_kernel[grid](
        x, dt, z if z is not None else dummy, B, C, A,
        D.float().contiguous() if D is not None else dummy,
        dt_bias.float().contiguous() if dt_bias is not None else dummy,
        mask if mask is not None else dummy, initial_state if initial_state is not None else dummy, y, ht,
        T, d, n,
        x.stride(0), x.stride(1), dt.stride(0), dt.stride(1),
        z.stride(0) if z is not None else 0, z.stride(1) if z is not None else 0,
        B.stride(0), B.stride(1), C.stride(0), C.stride(1),
        mask.stride(0) if mask is not None else 0, mask.stride(1) if mask is not None else 0,
        y.stride(0), y.stride(1),
        HAS_Z=z is not None, HAS_D=D is not None, HAS_DTB=dt_bias is not None, HAS_MASK=mask is not None,
        HAS_H0=initial_state is not None, BLOCK_D=block_d, BLOCK_N=max(triton.next_power_of_2(n), 2),
        num_warps=num_warps,
    )
    return y, ht


def selective_state_update_triton(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, out=None,
                                  block_d: int = 64, num_warps: int = 4):
    """One decode step: ``state [b, d, n]`` (contiguous; float32, or 16-bit: float32 math, the new state rounded
    once on store) is updated in place; ``x, dt, z: [b, d]``,
    ``B, C: [b, n]``. Returns ``y [b, d]`` (dtype of x, or written into ``out``)."""
    assert state.dtype in STATE_DTYPES and state.is_contiguous()
    x, dt, z, B, C = (_last_contiguous(t) for t in (x, dt, z, B, C))
    b, d = x.shape
    n = A.shape[-1]
    y = out if out is not None else torch.empty(b, d, device=x.device, dtype=x.dtype)
    dummy = A
    grid = (b, triton.cdiv(d, block_d))
    _state_update_kernel[grid](
        state, x, dt, z if z is not None else dummy, B, C, A,
        D if D is not None else dummy, dt_bias if dt_bias is not None else dummy, y,
        d, n, x.stride(0), dt.stride(0), z.stride(0) if z is not None else 0, B.stride(0), C.stride(0), y.stride(0),
        HAS_Z=z is not None, HAS_D=D is not None, HAS_DTB=dt_bias is not None,
        BLOCK_D=block_d, BLOCK_N=max(triton.next_power_of_2(n), 2), num_warps=num_warps,
    )
    return y
