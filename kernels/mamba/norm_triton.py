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

Tested against the PyTorch path under ``TRITON_INTERPRET=1`` (tests/test_kernels_norm_triton.py).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl


@triton.jit
def _gated_rms_norm_kernel(y_ptr, z_ptr, w_ptr, out_ptr, GS, sy, sz, so, w_group_stride, eps,
                           HAS_Z: tl.constexpr, NORM_FIRST: tl.constexpr, BLOCK: tl.constexpr):
    row, grp = tl.program_id(0), tl.program_id(1)
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


def _rows(t: torch.Tensor, d: int) -> torch.Tensor:
    """``t [..., d]`` as a 2-D ``[rows, d]`` view with channel stride 1 (a copy only where no such view exists)."""
    t = t.reshape(-1, d)
    return t if t.stride(-1) == 1 else t.contiguous()


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
    _gated_rms_norm_kernel[(y2.shape[0], groups)](
        y2, z2 if z2 is not None else y2, w, out, gs, y2.stride(0), z2.stride(0) if z2 is not None else 0,
        out.stride(0), gs if w.numel() == d else 0, eps, HAS_Z=z is not None, NORM_FIRST=norm_first,
        BLOCK=triton.next_power_of_2(gs), num_warps=4 if gs <= 1024 else 8,
    )
    return out.view(shape)
