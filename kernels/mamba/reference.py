"""Plain-PyTorch references for the Mamba / Mamba-2 / GLA recurrences: literal, one time step at a time.

Written from the equations in reference-models.md §5.2 (Mamba), §6.2 (Mamba-2) and §7.2 (GLA); they are
slow on purpose and serve as the ground truth that the production paths (``scan.py`` in PyTorch, the Triton
kernels in ``selective_scan.py``) are tested against. Inputs may be float32 or float64; the arithmetic runs
in float64 if any input is float64, else float32.

Layouts (batch first, time second, as the model code keeps them):

* Mamba-1: ``x, dt, z: [b, T, d]``, ``A: [d, n]`` (already negative), ``B, C: [b, T, n]``, ``D, dt_bias: [d]``.
* Mamba-2 (SSD): ``x: [b, T, h, p]``, ``dt: [b, T, h]``, ``A: [h]``, ``B, C: [b, T, g, n]`` (head ``i`` reads
  group ``i // (h / g)``), ``D, dt_bias: [h]``.
* GLA: ``q, k, gk: [b, T, h, K]``, ``v: [b, T, h, V]``, state ``[b, h, K, V]``.

``mask: [b, T]`` (1 = real token): a masked position leaves the state exactly as it was (no decay, no input).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F


def _work_dtype(*tensors) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x) (torch's softplus: identity above 20, like mamba_ssm's kernels)."""
    return F.softplus(x)


def selective_scan_ref(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=True, mask=None,
                       initial_state=None):
    """Mamba-1 selective scan. Returns ``(y [b, T, d], final state [b, d, n])`` in the working dtype.

    Per channel c:  Δ_t = softplus(dt_t + dt_bias),  h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t x_t B_t,
    y_t = h_t · C_t + D x_t,  then y_t ← y_t · silu(z_t).
    """
    wd = _work_dtype(x, dt, A, B, C)
    b, T, d = x.shape
    n = A.shape[-1]
    x, dt, A, B, C = (t.to(wd) for t in (x, dt, A, B, C))
    h = torch.zeros(b, d, n, dtype=wd, device=x.device) if initial_state is None else initial_state.to(wd).clone()
    ys = []
    for t in range(T):
        delta = dt[:, t] + (dt_bias.to(wd) if dt_bias is not None else 0.0)
        if dt_softplus:
            delta = softplus(delta)
        if mask is not None:
            delta = delta * mask[:, t].to(wd)[:, None]
        dA = torch.exp(delta[:, :, None] * A[None])
        h = dA * h + (delta * x[:, t])[:, :, None] * B[:, t, None, :]
        y = (h * C[:, t, None, :]).sum(-1)
        if D is not None:
            y = y + D.to(wd) * x[:, t]
        if z is not None:
            y = y * F.silu(z[:, t].to(wd))
        ys.append(y)
    return torch.stack(ys, dim=1), h


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=True):
    """One decode step of Mamba-1: updates ``state [b, d, n]`` in place and returns ``y [b, d]``."""
    wd = state.dtype
    delta = dt.to(wd) + (dt_bias.to(wd) if dt_bias is not None else 0.0)
    if dt_softplus:
        delta = softplus(delta)
    new = torch.exp(delta[:, :, None] * A.to(wd)[None]) * state + (delta * x.to(wd))[:, :, None] * B.to(wd)[:, None, :]
    state.copy_(new)
    y = (new * C.to(wd)[:, None, :]).sum(-1)
    if D is not None:
        y = y + D.to(wd) * x.to(wd)
    if z is not None:
        y = y * F.silu(z.to(wd))
    return y


def ssd_sequential_ref(x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=True, dt_limit=(0.0, float("inf")),
                       mask=None, initial_state=None):
    """Mamba-2 SSM as a sequential scan. Returns ``(y [b, T, h, p], final state [b, h, p, n])``.

    Per head:  Δ_t = clamp(softplus(dt_t + dt_bias), dt_limit),  S_t = exp(Δ_t a) S_{t-1} + Δ_t x_t B_tᵀ,
    y_t = S_t C_t + D x_t.
    """
    wd = _work_dtype(x, dt, A, B, C)
    b, T, h, p = x.shape
    g, n = B.shape[-2:]
    rep = h // g
    x, dt, A, B, C = (t.to(wd) for t in (x, dt, A, B, C))
    S = torch.zeros(b, h, p, n, dtype=wd, device=x.device) if initial_state is None else initial_state.to(wd).clone()
    ys = []
    for t in range(T):
        delta = dt[:, t] + (dt_bias.to(wd) if dt_bias is not None else 0.0)
        if dt_softplus:
            delta = softplus(delta)
        delta = delta.clamp(dt_limit[0], dt_limit[1])
        if mask is not None:
            delta = delta * mask[:, t].to(wd)[:, None]
        Bt = B[:, t].repeat_interleave(rep, dim=1)  # [b, h, n]
        Ct = C[:, t].repeat_interleave(rep, dim=1)
        S = torch.exp(delta * A)[:, :, None, None] * S + (delta[:, :, None] * x[:, t])[..., None] * Bt[:, :, None, :]
        y = (S * Ct[:, :, None, :]).sum(-1)
        if D is not None:
            y = y + D.to(wd)[:, None] * x[:, t]
        ys.append(y)
    return torch.stack(ys, dim=1), S


def causal_conv1d_ref(x, weight, bias=None, activation: bool = True, mask=None, initial=None):
    """Depthwise causal convolution on ``x [b, T, c]`` with ``weight [c, k]`` (``weight[:, k-1]`` multiplies the
    current token), zero history (or ``initial [b, c, k-1]``), optional SiLU. Masked inputs are zeroed first."""
    wd = _work_dtype(x, weight)
    b, T, c = x.shape
    k = weight.shape[-1]
    x = x.to(wd)
    if mask is not None:
        x = x * mask.to(wd)[..., None]
    hist = torch.zeros(b, k - 1, c, dtype=wd, device=x.device) if initial is None else initial.to(wd).transpose(1, 2)
    full = torch.cat([hist, x], dim=1)
    out = torch.zeros(b, T, c, dtype=wd, device=x.device)
    for j in range(k):
        out = out + weight.to(wd)[:, j] * full[:, j:j + T]
    if bias is not None:
        out = out + bias.to(wd)
    return F.silu(out) if activation else out


def gla_recurrent_ref(q, k, v, gk, scale=None, mask=None, initial_state=None):
    """GLA as a recurrence: ``S_t = diag(exp(gk_t)) S_{t-1} + k_t v_tᵀ``, ``o_t = (scale·q_t)ᵀ S_t``.

    ``gk`` is the log forget gate (≤ 0). Returns ``(o [b, T, h, V], final state [b, h, K, V])``."""
    wd = _work_dtype(q, k, v, gk)
    b, T, h, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    q, k, v, gk = (t.to(wd) for t in (q, k, v, gk))
    S = torch.zeros(b, h, K, V, dtype=wd, device=q.device) if initial_state is None else initial_state.to(wd).clone()
    out = []
    for t in range(T):
        decay, kt, vt = torch.exp(gk[:, t]), k[:, t], v[:, t]
        if mask is not None:
            m = mask[:, t].to(wd)[:, None, None]
            decay = torch.where(m > 0, decay, torch.ones_like(decay))
            kt = kt * m
        S = decay[..., None] * S + kt[..., None] * vt[..., None, :]
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    return torch.stack(out, dim=1), S


def gated_rms_norm_ref(x, gate, weight, eps):
    """fla ``FusedRMSNormGated`` (swish): ``w ⊙ x / sqrt(mean(x²) + eps) ⊙ silu(gate)`` over the last dim."""
    wd = _work_dtype(x, gate)
    x, gate = x.to(wd), gate.to(wd)
    y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    return y * weight.to(wd) * gate * torch.sigmoid(gate)
