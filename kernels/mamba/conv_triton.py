"""Triton kernels for the depthwise causal conv of Mamba and Mamba-2 (``d_conv`` = 4 taps, SiLU after).

Math (``reference.causal_conv1d_ref``): ``y[t, c] = silu(bias[c] + Σ_j w[c, j] · x[t - (k-1) + j, c])`` with zero
history; a masked (padded) position reads as zero, so a pad never enters a window.

Why a kernel: through ``F.conv1d`` the conv needs the channels-first layout, so x is transposed in, the result
transposed back, and SiLU and the mask are separate passes: about 2 ms per layer at batch 32 × 1900 tokens on
an H100 (Mamba-2-130M, 3328 channels), where one read of x and one write of y take ~0.3 ms. Here one program
reads a ``[BT, BC]`` tile of x in its own ``[b, T, c]`` layout (a strided slice of the in_proj output is fine: only
the channel stride must be 1), accumulates the ``k`` taps in float32 (the overlapping rows hit L1/L2), applies
bias, SiLU and the mask, and writes y once in x's dtype.

The decode step (``conv_step_triton``) does the same for one token: it shifts the ``[b, c, k-1]`` conv state in
place, appends x, and returns the activated output: one launch instead of the ~8 small ops of the PyTorch step,
no allocation but y, no host sync (capturable in a CUDA graph).

Tested against ``reference.py`` under ``TRITON_INTERPRET=1`` (tests/test_kernels_conv_triton.py).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .selective_scan import _last_contiguous, row_align


@triton.jit
def _causal_conv1d_kernel(x_ptr, w_ptr, bias_ptr, mask_ptr, y_ptr, T, C, sx_b, sx_t, sy_b, sy_t, sm_b,
                          K: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, SILU: tl.constexpr,
                          BT: tl.constexpr, BC: tl.constexpr, ROW_ALIGN: tl.constexpr):
    pid_t, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    sx_b = sx_b * ROW_ALIGN  # strides passed divided by ROW_ALIGN (selective_scan.row_align): rows load 16 B at once
    sx_t = sx_t * ROW_ALIGN
    t = pid_t * BT + tl.arange(0, BT)
    c = pid_c * BC + tl.arange(0, BC)
    c_ok = c < C
    acc = tl.zeros([BT, BC], dtype=tl.float32)
    for j in tl.static_range(K):
        src = t - (K - 1) + j
        ok = (src >= 0) & (src < T)
        xv = tl.load(x_ptr + b * sx_b + src[:, None] * sx_t + c[None, :], mask=ok[:, None] & c_ok[None, :],
                     other=0.0).to(tl.float32)
        if HAS_MASK:
            keep = tl.load(mask_ptr + b * sm_b + src, mask=ok, other=0).to(tl.float32)
            xv = xv * keep[:, None]
        w = tl.load(w_ptr + c * K + j, mask=c_ok, other=0.0).to(tl.float32)
        acc += xv * w[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(y_ptr + b * sy_b + t[:, None] * sy_t + c[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(t < T)[:, None] & c_ok[None, :])


@triton.jit
def _conv_step_kernel(state_ptr, x_ptr, w_ptr, bias_ptr, y_ptr, C, ss_b, ss_c, sx_b, sy_b,
                      K: tl.constexpr, KP: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                      BC: tl.constexpr, ROW_ALIGN: tl.constexpr):
    pid_c, b = tl.program_id(0), tl.program_id(1)
    sx_b = sx_b * ROW_ALIGN  # passed divided by ROW_ALIGN (selective_scan.row_align)
    c = pid_c * BC + tl.arange(0, BC)
    c_ok = c < C
    j = tl.arange(0, KP)  # window slot: 0..K-2 the state (oldest first), K-1 the new token
    in_state = j < K - 1
    ok = c_ok[:, None] & in_state[None, :]
    hist = tl.load(state_ptr + b * ss_b + c[:, None] * ss_c + j[None, :], mask=ok, other=0.0)
    xv = tl.load(x_ptr + b * sx_b + c, mask=c_ok, other=0.0)
    window = tl.where((j == K - 1)[None, :], xv.to(hist.dtype)[:, None], hist)
    w = tl.load(w_ptr + c[:, None] * K + j[None, :], mask=c_ok[:, None] & (j < K)[None, :], other=0.0)
    acc = tl.sum(window.to(tl.float32) * w.to(tl.float32), axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(y_ptr + b * sy_b + c, acc.to(y_ptr.dtype.element_ty), mask=c_ok)
    # shift left by one: slot i takes window slot i + 1 (all loads above precede this store)
    shifted = tl.where((j == K - 2)[None, :], xv.to(hist.dtype)[:, None], hist)
    nxt = tl.load(state_ptr + b * ss_b + c[:, None] * ss_c + (j[None, :] + 1),
                  mask=c_ok[:, None] & (j < K - 2)[None, :], other=0.0)
    shifted = tl.where((j < K - 2)[None, :], nxt, shifted)
    tl.debug_barrier()
    tl.store(state_ptr + b * ss_b + c[:, None] * ss_c + j[None, :], shifted, mask=ok)


def causal_conv1d_triton(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                         activation: bool = True, mask: Optional[torch.Tensor] = None,
                         config: Optional[dict] = None) -> torch.Tensor:
    """``x [b, T, c]`` (channel stride 1), ``weight [c, k]``, ``bias [c]``, ``mask [b, T]`` (1 = real token) →
    ``[b, T, c]`` contiguous in x's dtype."""
    b, T, C = x.shape
    K = weight.shape[-1]
    x = _last_contiguous(x)
    weight = weight.contiguous()
    # H100, batch 32 x 1900 tokens (benchmarks/ssm_fused.py --tune): 16 x 128 tiles, 4 warps, fastest at Mamba-2's
    # 1792 channels (0.33 ms vs 0.41 for 16 x 256 / 8 warps), within 3% of the best at Mamba's 1536; 106 registers
    cfg = {"BT": 16, "BC": 128, "num_warps": 4, **(config or {})}
    y = torch.empty(b, T, C, dtype=x.dtype, device=x.device)
    m = mask.to(torch.uint8).contiguous() if mask is not None else None
    grid = (triton.cdiv(T, cfg["BT"]), triton.cdiv(C, cfg["BC"]), b)
    align = row_align(x.stride(0), x.stride(1))
    _causal_conv1d_kernel[grid](
        x, weight, bias if bias is not None else weight, m if m is not None else x, y, T, C,
        x.stride(0) // align, x.stride(1) // align, y.stride(0), y.stride(1), m.stride(0) if m is not None else 0,
        K=K, HAS_BIAS=bias is not None, HAS_MASK=m is not None, SILU=activation, BT=cfg["BT"], BC=cfg["BC"],
        ROW_ALIGN=align, num_warps=cfg["num_warps"],
    )
    return y


def conv_step_triton(state: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                     bias: Optional[torch.Tensor] = None, activation: bool = True,
                     out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """One decode token: ``state [b, c, k-1]`` (last dim contiguous) shifted in place with ``x [b, c]`` appended;
    returns the (activated) conv output ``[b, c]`` in ``out_dtype`` (default x's dtype)."""
    b, C = x.shape
    K = weight.shape[-1]
    if state.shape != (b, C, K - 1) or state.stride(-1) != 1:
        raise ValueError(f"conv state must be [b, c, k-1] = {(b, C, K - 1)} with a contiguous last dim, "
                         f"got {tuple(state.shape)} strides {state.stride()}")
    x = _last_contiguous(x)
    weight = weight.contiguous()
    y = torch.empty(b, C, dtype=out_dtype or x.dtype, device=x.device)
    BC = 256
    align = row_align(x.stride(0))
    _conv_step_kernel[(triton.cdiv(C, BC), b)](
        state, x, weight, bias if bias is not None else weight, y, C, state.stride(0), state.stride(1),
        x.stride(0) // align, y.stride(0), K=K, KP=triton.next_power_of_2(K), HAS_BIAS=bias is not None,
        SILU=activation, BC=BC, ROW_ALIGN=align, num_warps=4,
    )
    return y
