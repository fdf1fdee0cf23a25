"""Recurrent-mixer kernels for Mamba, Mamba-2 and GLA, each beside a plain-PyTorch reference.

* ``reference.py`` — literal step-by-step recurrences (the ground truth of the tests).
* ``scan.py`` — production PyTorch paths (CPU; GPU fallback): blocked selective scan, chunked SSD, chunked GLA.
* ``selective_scan.py`` — Triton: Mamba-1 prefill scan and decode state update; ``ssd_triton.py`` — Triton:
  Mamba-2 (SSD) prefill and decode step; ``conv_triton.py`` — Triton: the causal conv (+ SiLU, mask) of both, and
  its decode step; ``norm_triton.py`` — Triton: the gated RMSNorm of Mamba-2 and GLA, the block RMSNorm and the
  residual add fused with it; ``act_triton.py`` — Triton: the SiLU-gated product of GLA's MLP; ``gla_triton.py``
  — Triton: GLA's log forget gate and decode step; ``gla_chunk_triton.py`` — Triton: the inter-chunk half of
  the GLA prefill after fla's cumsum and intra-chunk weights (imported lazily; they need ``triton``, which the
  CPU install does not have).
* GLA prefill on CUDA uses fla (flash-linear-attention 0.6.0) when installed: ``fused_recurrent_gla`` up to 64
  tokens, else its cumsum and intra-chunk weights and then ``gla_chunk_triton`` (``chunk_gla`` itself for float32
  inputs and head key dims that are not a power of two up to 256, or with ``states_on_chip=False``).

The dispatchers below pick Triton on CUDA tensors when it imports, else PyTorch. ``backend`` forces one:
"auto" | "triton" | "torch".
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch

from .scan import (
    causal_conv1d_torch, conv_step_torch, conv_tail, gated_rms_norm_torch, gla_chunked, gla_gate_torch,
    selective_scan_torch,
    selective_state_update_torch, silu_mul_torch, ssd_chunked, ssd_step_torch,
)

__all__ = ["add_rms_norm", "causal_conv1d", "conv_step", "conv_tail", "fla_usable", "gated_rms_norm", "gla_chunked",
           "gla_gate", "gla_prefill", "gla_step", "selective_scan_fn", "selective_state_update", "silu_mul",
           "ssd_chunked",
           "ssd_prefill", "ssd_step", "ssd_step_torch", "triton_usable"]


@functools.lru_cache(maxsize=None)
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.lru_cache(maxsize=None)
def _fla_importable() -> bool:
    if not _triton_importable() or importlib.util.find_spec("fla") is None:
        return False
    try:
        from fla.ops.gla import chunk_gla, fused_recurrent_gla  # noqa: F401
    except Exception:  # a broken install: use our own path
        return False
    return True


def fla_usable(t: torch.Tensor) -> bool:
    """fla's GLA kernels run on CUDA tensors when flash-linear-attention (fla-core) imports."""
    return t.is_cuda and _fla_importable()


def triton_usable(t: torch.Tensor) -> bool:
    """Triton kernels run on CUDA tensors when triton is installed."""
    return t.is_cuda and _triton_importable()


def _use_triton(t: torch.Tensor, backend: str) -> bool:
    if backend == "torch":
        return False
    if backend == "triton":
        if not _triton_importable():
            raise RuntimeError("backend='triton' needs the triton package (pip install triton)")
        if not t.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":  # the interpreter runs CPU tensors
            raise ValueError(f"kernels/backend 'triton' needs CUDA tensors, got a {t.device.type} tensor; "
                             "use 'auto' or 'torch' on this device")
        return True
    if backend != "auto":
        raise ValueError(f"unknown kernel backend {backend!r}; use auto, triton or torch")
    return triton_usable(t)


def causal_conv1d(x, weight, bias=None, activation: bool = True, mask=None, backend: str = "auto"):
    """Depthwise causal conv (+ SiLU) of ``x [b, T, c]`` with ``weight [c, k]``; positions with ``mask [b, T]`` 0 read
    as zero. Returns ``[b, T, c]`` contiguous in x's dtype."""
    if _use_triton(x, backend):
        from .conv_triton import causal_conv1d_triton

        return causal_conv1d_triton(x, weight, bias, activation, mask)
    return causal_conv1d_torch(x, weight, bias, activation, mask)


def conv_step(state, x, weight, bias=None, activation: bool = True, out_dtype=None, backend: str = "auto"):
    """One decode token of the causal conv: ``state [b, c, k-1]`` shifted in place with ``x [b, c]`` appended;
    returns the (activated) output ``[b, c]`` (float32 math) in ``out_dtype`` (default x's dtype)."""
    if _use_triton(x, backend):
        from .conv_triton import conv_step_triton

        return conv_step_triton(state, x, weight, bias, activation, out_dtype)
    return conv_step_torch(state, x, weight, bias, activation, out_dtype)


def gated_rms_norm(y, z, weight, eps: float, groups: int, out_dtype, norm_first: bool = False, backend: str = "auto"):
    """Gated RMSNorm (``scan.gated_rms_norm_torch``): Mamba-2's gate-then-norm, or GLA's norm-then-gate with
    ``norm_first``; float32 math, result in ``out_dtype``."""
    if _use_triton(y, backend):
        from .norm_triton import gated_rms_norm_triton

        return gated_rms_norm_triton(y, z, weight, eps, groups, out_dtype, norm_first)
    return gated_rms_norm_torch(y, z, weight, eps, groups, out_dtype, norm_first)


def silu_mul(gu, gate_second: bool = False, backend: str = "auto"):
    """``silu(gu[..., :m]) * gu[..., m:]`` of a fused gate / up projection ``gu [..., 2m]`` (``gate_second``: the
    gate is the second half); float32 math, one rounding to gu's dtype."""
    if _use_triton(gu, backend):
        from .act_triton import silu_mul_triton

        return silu_mul_triton(gu, gate_second)
    return silu_mul_torch(gu, gate_second)


def add_rms_norm(resid, delta, weight, eps: float, out_dtype, backend: str = "auto"):
    """``(resid + delta, its RMSNorm in out_dtype)``; the add is in resid's dtype, the norm in float32."""
    if _use_triton(resid, backend):
        from .norm_triton import add_rms_norm_triton

        return add_rms_norm_triton(resid, delta, weight, eps, out_dtype)
    resid = resid + delta
    return resid, gated_rms_norm_torch(resid, None, weight, eps, 1, out_dtype, norm_first=True)


def selective_scan_fn(x, dt, A, B, C, D=None, z=None, dt_bias=None, mask=None, initial_state=None,
                   backend: str = "auto", out_dtype=None):
    """Mamba-1 scan with softplus(dt + dt_bias); returns ``(y [b, T, d], final state [b, d, n] float32)``."""
    if _use_triton(x, backend):
        from .selective_scan import selective_scan_triton

        return selective_scan_triton(x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, mask=mask,
                                     initial_state=initial_state, out_dtype=out_dtype)
    y, h = selective_scan_torch(x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, mask=mask, initial_state=initial_state)
    return y.to(out_dtype or x.dtype), h.float() if h.dtype != torch.float64 else h


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, backend: str = "auto"):
    """One Mamba-1 decode step; updates ``state [b, d, n]`` in place and returns ``y [b, d]``. A 16-bit state
    (``state_dtype="model"`` of the adapters) is stepped in float32 and rounded once."""
    if _use_triton(x, backend):
        from .selective_scan import selective_state_update_triton

        return selective_state_update_triton(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias)
    return selective_state_update_torch(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias)


def ssd_prefill(x, dt, A, B, C, chunk_size: int = 256, D=None, dt_bias=None, dt_softplus=True,
                dt_limit=(0.0, float("inf")), mask=None, initial_state=None, backend: str = "auto", out_dtype=None):
    """Mamba-2 SSD over a prompt (shapes as :func:`ssd_chunked`). Returns ``(y [b, T, h, p] in out_dtype (default
    x.dtype), final state [b, h, p, n] float32)``. ``chunk_size`` sets the PyTorch path's chunk; the Triton kernel
    uses its own (the result is the same up to float rounding)."""
    if _use_triton(x, backend):
        from .ssd_triton import ssd_prefill_triton

        return ssd_prefill_triton(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus,
                                  dt_limit=dt_limit, mask=mask, initial_state=initial_state, out_dtype=out_dtype)
    y, S = ssd_chunked(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
                       mask=mask, initial_state=initial_state)
    return y.to(out_dtype or x.dtype), S.float() if S.dtype != torch.float64 else S


def ssd_step(state, x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=True, dt_limit=(0.0, float("inf")),
             backend: str = "auto", out_dtype=None):
    """One Mamba-2 decode token; updates ``state [b, h, p, n]`` (contiguous; float32, or 16-bit: float32 math,
    rounded once) in place. ``x [b, h, p]``,
    ``dt [b, h]``, ``B, C [b, g, n]``. Returns ``y [b, h, p]`` (incl. ``D x``) in out_dtype (default x.dtype)."""
    if _use_triton(x, backend):
        from .ssd_triton import ssd_step_triton

        return ssd_step_triton(state, x, dt, A, B, C, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus,
                               dt_limit=dt_limit, out_dtype=out_dtype)
    y = ssd_step_torch(state, x, dt, A, B, C, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit)
    return y.to(out_dtype or x.dtype)


def gla_prefill(q, k, v, gk, scale=None, mask=None, backend: str = "auto", states_on_chip: bool = True):
    """GLA over a prompt: ``q, k, gk: [b, T, h, K]``, ``v: [b, T, h, V]``, ``gk`` the log forget gate.
    Returns ``(o [b, T, h, V], final state [b, h, K, V] float32)``. ``backend``: auto | fla | torch.
    ``states_on_chip`` (fla backend, 16-bit inputs, T > 64, K a power of two ≤ 256): fla's ``chunk_gla`` with
    its inter-chunk half replaced by ``gla_chunk_triton`` (the state stays in registers instead of 1 GB of chunk
    states per layer at GLA-1.3B's 32 × 1900; the same output bit for bit); False runs fla's own kernels."""
    if backend not in ("auto", "fla", "torch"):
        raise ValueError(f"unknown GLA backend {backend!r}; use auto, fla or torch")
    if backend == "fla" or (backend == "auto" and fla_usable(q)):
        from fla.ops.gla import chunk_gla, fused_recurrent_gla

        gk = gk.to(q.dtype)  # as fla's own layer passes it (and one autotuned kernel set per dtype, not two)
        if mask is not None:  # a pad adds nothing and does not decay the state
            m = mask.to(q.dtype)[:, :, None, None]
            k = k * m
            gk = gk * m
        K = q.shape[-1]
        scale = K ** -0.5 if scale is None else scale
        if q.shape[1] <= 64:  # what fla's own layer does for short inputs
            o, state = fused_recurrent_gla(q, k, v, gk=gk, scale=scale, output_final_state=True)
        elif states_on_chip and K <= 256 and K & (K - 1) == 0 and q.dtype in (torch.float16, torch.bfloat16):
            from .gla_chunk_triton import gla_chunk_fla

            o, state = gla_chunk_fla(q, k, v, gk, scale)
        else:
            o, state = chunk_gla(q, k, v, gk, scale=scale, output_final_state=True)
        return o, state.float()
    return gla_chunked(q, k, v, gk, scale=scale, mask=mask)


def gla_gate(x, weight, bias, normalizer: float, clamp_min=None, out_dtype=torch.float32, backend: str = "auto"):
    """GLA's log forget gate ``logsigmoid(x Wᵀ + b) / normalizer`` (clamped below at ``clamp_min``) from the
    low-rank activations ``x [..., R]``, ``weight [HK, R]``: the linear rounded to x's dtype, the rest float32
    math; ``[..., HK]`` in ``out_dtype``."""
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    if _use_triton(x, backend):
        from .gla_triton import gla_gate_triton

        return gla_gate_triton(x, weight, bias, normalizer, clamp_min, out_dtype)
    return gla_gate_torch(x, weight, bias, normalizer, clamp_min, out_dtype)


def gla_step(state, q, k, v, gk, scale: float, backend: str = "auto", gate=None, out_dtype=torch.float32):
    """One GLA decode step on ``state [b, h, K, V]`` float32 (in place); ``q, k, gk: [b, h, K]``, ``v: [b, h, V]``.
    ``gate``: in place of ``gk`` (None), the arguments ``(x, weight, bias, normalizer, clamp_min)`` of
    :func:`gla_gate` (``weight``'s rows: the key heads, each read by ``h / h_kv`` query heads), computed inside the
    Triton step. Returns ``o [b, h, V]`` in ``out_dtype``."""
    if gate is not None:
        x, weight, bias, normalizer, clamp_min = gate
        if bias is None:
            gate = (x, weight, weight.new_zeros(weight.shape[0]), normalizer, clamp_min)
    if _use_triton(state, backend):
        from .gla_triton import gla_step_triton

        return gla_step_triton(state, q, k, v, gk, scale, out_dtype=out_dtype, gate=gate)
    if gate is not None:
        b, h, K = q.shape
        gk = gla_gate_torch(*gate).view(b, -1, K)
        gk = gk.repeat_interleave(h // gk.shape[1], dim=1)
    state.mul_(torch.exp(gk.float())[..., None]).add_(k.float()[..., None] * v.float()[..., None, :])
    return (q.float()[:, :, None, :] * scale @ state).squeeze(2).to(out_dtype)
