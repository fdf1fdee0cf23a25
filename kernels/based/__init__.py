"""Based linear attention and JRT-RNN prefix linear attention: references (CPU) and Triton kernels (CUDA).

Model code calls the three dispatch functions below; they pick the fused Triton kernel for CUDA
tensors when Triton imports and the shapes are supported (f = 16, fp32/bf16/fp16), else the
plain-PyTorch reference in ``reference.py``. Set ``JRT_EVAL_KERNELS=reference`` to force the
reference everywhere (debugging, parity checks); ``impl="reference"|"triton"`` does the same per
call. Kernels: ``triton_prefill.py`` (Based prefill, any key mask), ``triton_pla.py`` (JRT-RNN
prefix linear attention), ``triton_decode.py`` (one decode step, state updated in place).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .reference import (  # noqa: F401
    DEFAULT_EPS,
    BasedState,
    based_attention_chunked,
    based_attention_quadratic,
    based_decode_step,
    feature_dim,
    pla_attention_chunked,
    pla_attention_quadratic,
    state_from_keys,
    taylor_features,
    taylor_kernel,
)


_TRITON = None  # (triton_prefill, triton_pla, triton_decode) once imported, False if unavailable


def triton_modules():
    """The Triton kernel modules, imported on first use (None if Triton is missing)."""
    global _TRITON
    if _TRITON is None:
        try:
            from . import triton_decode, triton_pla, triton_prefill
            _TRITON = (triton_prefill, triton_pla, triton_decode)
        except Exception:  # no triton (CPU installs), or a triton that cannot load
            _TRITON = False
    return _TRITON or None


def _use_fused(t: torch.Tensor, impl: Optional[str] = None) -> bool:
    """``impl``: None/"auto" (fused on CUDA unless JRT_EVAL_KERNELS=reference), "reference", "triton"."""
    impl = impl or os.environ.get("JRT_EVAL_KERNELS", "auto")
    if impl == "reference":
        return False
    if impl == "triton":
        if triton_modules() is None:
            raise RuntimeError("impl='triton' requested but Triton is not importable")
        return True
    return t.is_cuda and triton_modules() is not None


def _state_ok(state: Optional[BasedState], q: torch.Tensor, v: torch.Tensor) -> bool:
    if state is None:
        return True
    D = feature_dim(q.shape[-1])
    B, H, dv = q.shape[0], q.shape[-2], v.shape[-1]
    return tuple(state.S.shape) == (B, H, D, dv) and tuple(state.z.shape) == (B, H, D)


def based_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: Optional[torch.Tensor] = None,
    initial_state: Optional[BasedState] = None,
    output_final_state: bool = False,
    eps: float = DEFAULT_EPS,
    impl: Optional[str] = None,
    mask_is_range: bool = False,
):
    """Causal Based attention over [B, T, H, f] q/k and [B, T, H, dv] v -> (o, state or None).

    CUDA tensors with f = 16 go to the fused Triton kernel (triton_prefill.py), anything else to the
    reference; both return the state as fp32 ``BasedState`` in the reference's compact layout.
    ``mask_is_range``: each row of ``key_mask`` is one contiguous run of True (padding on one side); the fused
    kernel then computes the mask from the run's ends instead of reading it.
    """
    if _use_fused(q, impl) and q.shape[1] > 0 and _state_ok(initial_state, q, v):
        tp = triton_modules()[0]
        if tp.supported(q, k, v):
            return tp.based_prefill_triton(
                q, k, v, key_mask=key_mask, initial_state=initial_state,
                output_final_state=output_final_state, eps=eps, mask_is_range=mask_is_range,
            )
    return based_attention_chunked(
        q, k, v, key_mask=key_mask, initial_state=initial_state,
        output_final_state=output_final_state, eps=eps,
    )


def pla_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_enc: torch.Tensor,
    v_enc: torch.Tensor,
    enc_mask: torch.Tensor,
    key_mask: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    eps: float = DEFAULT_EPS,
    impl: Optional[str] = None,
    masks_are_ranges: bool = False,
):
    """JRT-RNN prefix linear attention -> (o, state or None); ``enc_mask [B, T]`` marks the encoder prefix.
    ``masks_are_ranges``: both masks are one contiguous run per row (see ``based_prefill``)."""
    if _use_fused(q, impl) and q.shape[1] > 0:
        tp, tpla = triton_modules()[:2]
        if tp.supported(q, k, v) and tp.supported(q, k_enc, v_enc):
            return tpla.pla_prefill_triton(
                q, k, v, k_enc, v_enc, enc_mask, key_mask=key_mask,
                output_final_state=output_final_state, eps=eps, masks_are_ranges=masks_are_ranges,
            )
    return pla_attention_chunked(
        q, k, v, k_enc, v_enc, enc_mask, key_mask=key_mask,
        output_final_state=output_final_state, eps=eps,
    )


def based_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: BasedState,
    eps: float = DEFAULT_EPS,
    double_add_kv: bool = False,
    impl: Optional[str] = None,
) -> torch.Tensor:
    """One decode step, [B, H, f] q/k and [B, H, dv] v; updates ``state`` in place."""
    if _use_fused(q, impl):
        td = triton_modules()[2]
        if td.supported(q, k, v, state):
            return td.based_step_triton(q, k, v, state, eps=eps, double_add_kv=double_add_kv)
    return based_decode_step(q, k, v, state, eps=eps, double_add_kv=double_add_kv)
