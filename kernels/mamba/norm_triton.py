"""Triton kernel for the gated RMSNorm of Mamba-2 and GLA: one pass over the rows instead of ~8 elementwise ones.

Math (``scan.gated_rms_norm_torch``; per row, per group of ``gs = d / groups`` channels, float32):

    gate first (Mamba-2, mamba_ssm's ``norm_before_gate=False``):  g = y ⊙ silu(z);  out = w ⊙ g / rms(g)
    norm first (GLA, fla's ``FusedRMSNormGated``):                 out = w ⊙ y / rms(y) ⊙ silu(z)

with ``rms(a) = sqrt(mean(a²) + eps)`` over the group. ``w`` is either one weight per channel (Mamba-2, ``[d]``) or
one ``[gs]`` weight shared by every group (GLA's per-head norm). ``z`` may be absent (GLA without output gate).

Why: in PyTorch this is a float32 product, a square, a mean, an rsqrt, two multiplies and a cast, each a full pass
over ``[b, T, d]`` float32 in prefill (and ~8 launches per layer in decode). Here one program reads one group of
one row (y and z may be strided: only the channel stride must be 1; z is a slice of the in_proj output) and writes
the result once in ``out_dtype``.

``add_rms_norm_triton`` fuses the residual add in front of the block RMSNorm (the seam between pre-norm blocks,
mamba_ssm's ``fused_add_norm``): one read of the residual and the block output, one write of each result.

Tested against the PyTorch path under ``TRITON_INTERPRET=1`` (tests/test_kernels_norm_triton.py).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .selective_scan import _last_contiguous, row_align


@triton.jit
def _gated_rms_norm_kernel(y_ptr, z_ptr, w_ptr, out_ptr, GS, sy, sz, so, w_group_stride, eps,
                           HAS_Z: tl.constexpr, NORM_FIRST: tl.constexpr, BLOCK: tl.constexpr,
                           ROW_ALIGN: tl.constexpr):
    row, grp = tl.program_id(0), tl.program_id(1)
    sy = sy * ROW_ALIGN  # strides passed divided by ROW_ALIGN (selective_scan.row_align): z is a slice of the
    sz = sz * ROW_ALIGN  # in_proj output, whose rows Triton would otherwise read 2 bytes at a time
    col = tl.arange(0, BLOCK)
    ok = col < GS
    off = grp * GS + col
    y = tl.load(y_ptr + row.to(tl.int64) * sy + off, mask=ok, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + grp * w_group_stride + col, mask=ok, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + row.to(tl.int64) * sz + off, mask=ok, other=0.0).to(tl.float32)
        gate = z * tl.sigmoid(z)
    if NORM_FIRST:
        g = y
    else:
        g = y * gate if HAS_Z else y
    r = tl.rsqrt(tl.sum(g * g, axis=0) / GS + eps)
    out = g * r * w
    if NORM_FIRST and HAS_Z:
        out = out * gate
    tl.store(out_ptr + row.to(tl.int64) * so + off, out.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _add_rms_norm_kernel(r_ptr, d_ptr, w_ptr, r_out_ptr, out_ptr, D, sr, sd, sro, so, eps, BLOCK: tl.constexpr):
    """One row: ``r' = r + delta`` (rounded to r's dtype, as the PyTorch add), ``out = w ⊙ r' / rms(r')``."""
    row = tl.program_id(0).to(tl.int64)
    col = tl.arange(0, BLOCK)
    ok = col < D
    r = tl.load(r_ptr + row * sr + col, mask=ok, other=0.0).to(tl.float32)
    r += tl.load(d_ptr + row * sd + col, mask=ok, other=0.0).to(tl.float32)
    r = r.to(r_out_ptr.dtype.element_ty)
    tl.store(r_out_ptr + row * sro + col, r, mask=ok)
    r = r.to(tl.float32)
    w = tl.load(w_ptr + col, mask=ok, other=0.0).to(tl.float32)
    out = r * tl.rsqrt(tl.sum(r * r, axis=0) / D + eps) * w
    tl.store(out_ptr + row * so + col, out.to(out_ptr.dtype.element_ty), mask=ok)


def _rows(t: torch.Tensor, d: int) -> torch.Tensor:
    """``t [..., d]`` as a 2-D ``[rows, d]`` view with channel stride 1 (a copy only where no such view exists)."""
    return _last_contiguous(t.reshape(-1, d))


def gated_rms_norm_triton(y: torch.Tensor, z: Optional[torch.Tensor], weight: torch.Tensor, eps: float,
                          groups: int, out_dtype: torch.dtype, norm_first: bool = False) -> torch.Tensor:
    """``y, z [..., d]``, ``weight [d]`` (per channel) or ``[d / groups]`` (shared by the groups) → ``[..., d]`` in
    ``out_dtype``; see the module docstring for the two orders."""
    shape, d = y.shape, y.shape[-1]
    if d % groups:
        raise ValueError(f"{d} channels do not split into {groups} groups")
    gs = d // groups
    if weight.numel() not in (d, gs):
        raise ValueError(f"weight has {weight.numel()} values; expected {d} (per channel) or {gs} (per group)")
    y2 = _rows(y, d)
    z2 = _rows(z, d) if z is not None else None
    out = torch.empty(y2.shape[0], d, dtype=out_dtype, device=y.device)
    w = weight.contiguous()
    sz = z2.stride(0) if z2 is not None else 0
    align = row_align(y2.stride(0), sz)
    _gated_rms_norm_kernel[(y2.shape[0], groups)](
        y2, z2 if z2 is not None else y2, w, out, gs, y2.stride(0) // align, sz // align,
        out.stride(0), gs if w.numel() == d else 0, eps, HAS_Z=z is not None, NORM_FIRST=norm_first,
        BLOCK=triton.next_power_of_2(gs), ROW_ALIGN=align, num_warps=4 if gs <= 1024 else 8,
    )
    return out.view(shape)


def add_rms_norm_triton(resid: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float,
                        out_dtype: torch.dtype):
    """The pre-norm block seam in one pass: ``resid' = resid + delta`` (in resid's dtype) and
    ``w ⊙ resid' / rms(resid')`` in ``out_dtype``. Returns ``(resid', normed)``, both new ``[..., d]`` tensors."""
    shape, d = resid.shape, resid.shape[-1]
    if delta.shape != shape or weight.numel() != d:
        raise ValueError(f"add_rms_norm: resid {tuple(shape)}, delta {tuple(delta.shape)}, weight {weight.numel()}")
    r2, d2 = _rows(resid, d), _rows(delta, d)
    r_out = torch.empty(r2.shape, dtype=resid.dtype, device=resid.device)
    out = torch.empty(r2.shape, dtype=out_dtype, device=resid.device)
    block = triton.next_power_of_2(d)
    _add_rms_norm_kernel[(r2.shape[0],)](r2, d2, weight.contiguous(), r_out, out, d, r2.stride(0), d2.stride(0),
                                         r_out.stride(0), out.stride(0), eps, BLOCK=block,
                                         num_warps=4 if block <= 1024 else 8)
    return r_out.view(shape), out.view(shape)
