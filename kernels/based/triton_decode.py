"""Fused Triton decode step for Based / JRT-RNN: one token per (batch, head), state update + readout.

Per program (batch·head): build φ(q), φ(k) (153 compact features, reference order) in
registers from the 16 coordinates, S ← S + c·φ(k)vᵀ, z ← z + φ(k), y = φ(q)ᵀS / (φ(q)·z + ε),
all in fp32, S and z updated in place (reference ``based_decode_step`` semantics, ``c = 2`` for
REF's double-add quirk). The step is memory-bound: it reads and writes the fp32 state once
(153 × (dv + 1) × 4 bytes × 2 per head).
"""
from __future__ import annotations

import math
from typing import Dict

import torch
import triton
import triton.language as tl

from .reference import DEFAULT_EPS, BasedState

F_SUPPORTED = 16
D_COMPACT = 1 + 16 + 16 * 17 // 2  # 153
BLOCK_D = 256

_TABLES: Dict[torch.device, torch.Tensor] = {}


def _feature_tables(device: torch.device) -> torch.Tensor:
    """int32 [2, 256] (first, second coordinate; -1 = the factor 1) and fp32 coefficients [256]."""
    if device not in _TABLES:
        f = F_SUPPORTED
        ia = torch.full((BLOCK_D,), -1, dtype=torch.int32)
        ib = torch.full((BLOCK_D,), -1, dtype=torch.int32)
        coef = torch.zeros(BLOCK_D, dtype=torch.float32)
        rd = math.sqrt(f)
        coef[0] = 1.0
        ia[1:1 + f] = torch.arange(f, dtype=torch.int32)
        coef[1:1 + f] = 1.0 / math.sqrt(rd)
        i, j = torch.triu_indices(f, f)
        n = i.numel()
        ia[1 + f:1 + f + n] = i.to(torch.int32)
        ib[1 + f:1 + f + n] = j.to(torch.int32)
        coef[1 + f:1 + f + n] = torch.where(i == j, 1.0 / (math.sqrt(2) * rd), 1.0 / rd)
        _TABLES[device] = (torch.stack([ia, ib]).to(device), coef.to(device))
    return _TABLES[device]


@triton.jit
def _phi(x_ptr, ia, ib, coef):
    xa = tl.load(x_ptr + ia, mask=ia >= 0, other=1.0).to(tl.float32)
    xb = tl.load(x_ptr + ib, mask=ib >= 0, other=1.0).to(tl.float32)
    return xa * xb * coef


@triton.jit
def _based_step_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, s_ptr, z_ptr, tab_ptr, coef_ptr,
    H, sqb, sqh, skb, skh, svb, svh, sob, soh, ssb, ssh, ssd, szb, szh,
    eps, kv_coef,
    D: tl.constexpr, DV: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    rows = tl.arange(0, BLOCK_D)
    rmask = rows < D
    ia = tl.load(tab_ptr + rows)
    ib = tl.load(tab_ptr + BLOCK_D + rows)
    coef = tl.load(coef_ptr + rows)
    phi_q = _phi(q_ptr + b * sqb + h * sqh, ia, ib, coef)
    phi_k = _phi(k_ptr + b * skb + h * skh, ia, ib, coef)

    cols = tl.arange(0, BLOCK_DV)
    cmask = cols < DV
    v = tl.load(v_ptr + b * svb + h * svh + cols, mask=cmask, other=0.0).to(tl.float32)
    s_ptrs = s_ptr + b * ssb + h * ssh + rows[:, None] * ssd + cols[None, :]
    smask = rmask[:, None] & cmask[None, :]
    S = tl.load(s_ptrs, mask=smask, other=0.0)
    S += kv_coef * phi_k[:, None] * v[None, :]
    tl.store(s_ptrs, S, mask=smask)
    z_ptrs = z_ptr + b * szb + h * szh + rows
    z = tl.load(z_ptrs, mask=rmask, other=0.0) + phi_k
    num = tl.sum(phi_q[:, None] * S, 0)
    den = tl.sum(phi_q * z, 0)
    tl.store(o_ptr + b * sob + h * soh + cols, (num / (den + eps)).to(o_ptr.dtype.element_ty), mask=cmask)
    tl.store(z_ptrs, z, mask=rmask)


def supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: BasedState) -> bool:
    return (
        q.dim() == 3 and q.shape[-1] == F_SUPPORTED and k.shape == q.shape and v.shape[:2] == q.shape[:2]
        and q.dtype in (torch.float32, torch.bfloat16, torch.float16) and k.dtype == q.dtype
        and v.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and state.S.dtype == torch.float32 and state.z.dtype == torch.float32
        and tuple(state.S.shape) == (q.shape[0], q.shape[1], D_COMPACT, v.shape[-1])
        and tuple(state.z.shape) == (q.shape[0], q.shape[1], D_COMPACT)
        and state.S.stride(-1) == 1 and state.z.stride(-1) == 1
    )


def based_step_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: BasedState,
    eps: float = DEFAULT_EPS, double_add_kv: bool = False, num_warps: int | None = None,
) -> torch.Tensor:
    """Same contract as ``reference.based_decode_step`` (compact state, updated in place)."""
    assert supported(q, k, v, state), "based_step_triton: f must be 16, state fp32 [B, H, 153, dv]"
    B, H, _ = q.shape
    dv = v.shape[-1]
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    # One program per (batch, head) holds the whole dv row: z is shared by every dv column, and a
    # split over dv would let one program read z after another had already updated it in place.
    block_dv = max(16, triton.next_power_of_2(dv))
    tab, coef = _feature_tables(q.device)
    o = torch.empty(B, H, dv, device=v.device, dtype=v.dtype)
    S, z = state.S, state.z
    grid = (B * H,)
    _based_step_kernel[grid](
        q, k, v, o, S, z, tab, coef,
        H, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        o.stride(0), o.stride(1), S.stride(0), S.stride(1), S.stride(2), z.stride(0), z.stride(1),
        eps, 2.0 if double_add_kv else 1.0,
        D=D_COMPACT, DV=dv, BLOCK_D=BLOCK_D, BLOCK_DV=block_dv,
        num_warps=num_warps or (8 if block_dv >= 64 else 4),
    )
    return o
