"""Triton kernels for Mamba-2 (SSD): the prefill scan and the one-token state update.

Math (``reference.ssd_sequential_ref``), per (row, head) with a scalar decay rate ``a = A[head] < 0`` and the
head's group ``g = head // (h / ngroups)``:

    Δ_t = clamp(softplus(dt_t + dt_bias), dt_limit)   (0 at a padded step: no decay, no input)
    S_t = exp(Δ_t a) S_{t-1} + (Δ_t x_t) B_tᵀ          (S: [p, n], float32)
    y_t = S_t C_t + D x_t

Prefill (state-space duality): inside a chunk of ``BT`` tokens with the running log-decay
``cs_l = Σ_{s≤l} Δ_s a`` (≤ 0, non-increasing) and ``S`` the state entering the chunk,

    y_l = Σ_{s≤l} (C_l·B_s) exp(cs_l − cs_s) Δ_s x_s  +  exp(cs_l) S C_l  +  D x_l
    S  ← exp(cs_last) S  +  Σ_s exp(cs_last − cs_s) Δ_s x_s B_sᵀ

i.e. four matmuls per chunk on tensor cores: C Bᵀ [BT, BT], (C Bᵀ ⊙ L)(x Δ) [BT, p], C Sᵀ [BT, p] and
(x Δ ⊙ w)ᵀ B [p, n]. Every decay factor is exp of a non-positive number (masked above the diagonal before the
exp), so nothing overflows however strong the decay. The decomposition is exact for any ``BT``: it need not be
the model's ``chunk_size`` (256), which only changes float rounding. Decays are computed as ``exp2`` of
``log2(e)``-scaled sums.

Prefill grid: one program per (row·head, block of ``BLOCK_P`` head channels). It keeps its ``[BLOCK_P, n]``
state in float32 registers and walks the sequence chunk by chunk, so memory traffic is one read of x, dt, B, C
and one write of y, and nothing of size ``[T, T]`` (or ``[b, h, L, L]``) is ever materialised. The heads of a
group read the same B, C; programs are numbered row-major over (row, head), so those reads hit L2.

Dot precision (``_dot_config``): fp32 inputs use fp32 operands with 3xTF32 on GPU (about fp32 accuracy;
"ieee" in the interpreter). 16-bit inputs: C Bᵀ in the input dtype (exact products), the dots of derived
operands (C Bᵀ ⊙ L, x Δ, the state) in TF32 by default (10-bit mantissa, closer to an fp32 run), or with
``config={"mix": "bf16"}`` in bf16 (the precision class of mamba_ssm's own chunk scan; range-safe for fp16
models too), all accumulated in fp32. Triton's CPU interpreter cannot multiply bf16 (it matmuls the raw
bits), so there every dot is fp32.

The Mamba-2 adapter uses these kernels on CUDA by default (``kernels="auto"``; H100, batch 32, 1900-token
prompts: prefill kernel 1.00 ms per layer = 16x the PyTorch chunked SSD with the default tiles and register cap,
whole generate 5.9-6.9x our PyTorch-SSD path with the same greedy text; benchmarks/ssd.py, gpu_check_ssm.py).

Tried and dropped (benchmarks/README.md, fourth session): a chunk-parallel form (chunk states, a sequential pass
over them, then every query block independently, as mamba_ssm does) ran 2.45 ms against 1.11 at batch 32 x 1900:
each of its three kernels took longer than its memory traffic, and its output kernel alone was slower than this
one; it won only at batch 1 x 16384 (0.94 vs 1.26 ms).

Decode step: one program per (row·head, block of ``BLOCK_P`` channels) reads its ``[BLOCK_P, n]`` slice of the
state once and writes it once (in place, no allocation but ``y``, no host sync: capturable in a CUDA graph).

Inputs stay in the model's layout: x, dt, B, C may be strided views of the in_proj / conv outputs (only the
last dimension must be contiguous). Tested against ``reference.py`` under ``TRITON_INTERPRET=1`` on CPU
(tests/test_kernels_ssd_triton.py) and on GPU by benchmarks/gpu_check_ssm.py.
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

from .selective_scan import STATE_DTYPES, _last_contiguous, _softplus

_LOG2E = 1.4426950408889634


@triton.jit
def _discretise(dt, dt_min, dt_max, DT_SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr):
    """Δ from the raw time step (bias already added): softplus, then clamped to ``dt_limit`` (mamba_ssm's order)."""
    delta = _softplus(dt) if DT_SOFTPLUS else dt
    if HAS_LIMIT:
        delta = tl.minimum(tl.maximum(delta, dt_min), dt_max)
    return delta


@triton.jit
def _program_tile(H, P, N, REP, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
    """What a program of either kernel owns: grid (row·head, block of head channels) -> row ``bi``, head ``hi``
    (and as int64), its group ``gi``, the channel / state offsets with their masks, and the offsets of its
    ``[BLOCK_P, BLOCK_N]`` slice of a contiguous ``[b, h, p, n]`` state."""
    pid_bh = tl.program_id(0)
    pid_p = tl.program_id(1)
    bi = (pid_bh // H).to(tl.int64)
    hi = pid_bh % H
    gi = (hi // REP).to(tl.int64)
    hi64 = hi.to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mp = offs_p < P
    mn = offs_n < N
    mpn = mp[:, None] & mn[None, :]
    state_off = (bi * H + hi64) * P * N + offs_p[:, None] * N + offs_n[None, :]
    return bi, hi, hi64, gi, offs_p, offs_n, mp, mn, mpn, state_off


@triton.jit
def _ssd_prefill_kernel(
    x_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, dtb_ptr, mask_ptr, h0_ptr, y_ptr, ht_ptr,
    T, H, P, N, REP, dt_min, dt_max,
    s_xb, s_xt, s_xh, s_dtb, s_dtt, s_dth, s_bb, s_bt, s_bg, s_cb, s_ct, s_cg, s_mb, s_mt, s_yb, s_yt, s_yh,
    HAS_D: tl.constexpr, HAS_DTB: tl.constexpr, DT_SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr,
    HAS_MASK: tl.constexpr, HAS_H0: tl.constexpr,
    BT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    IN_DOT: tl.constexpr, IN_PREC: tl.constexpr, MIX_DOT: tl.constexpr, MIX_PREC: tl.constexpr,
):
    bi, hi, hi64, gi, offs_p, offs_n, mp, mn, mpn, state_off = _program_tile(H, P, N, REP, BLOCK_P, BLOCK_N)
    ii = tl.arange(0, BT)

    a2 = tl.load(a_ptr + hi).to(tl.float32) * 1.4426950408889634  # log2 domain: exp(Δa) = exp2(Δ a log2 e)
    if HAS_D:
        dv = tl.load(d_ptr + hi).to(tl.float32)
    if HAS_DTB:
        dtb = tl.load(dtb_ptr + hi).to(tl.float32)
    if HAS_H0:
        S = tl.load(h0_ptr + state_off, mask=mpn, other=0.0).to(tl.float32)
    else:
        S = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)

    x_base = x_ptr + bi * s_xb + hi64 * s_xh
    dt_base = dt_ptr + bi * s_dtb + hi64 * s_dth
    b_base = b_ptr + bi * s_bb + gi * s_bg
    c_base = c_ptr + bi * s_cb + gi * s_cg
    y_base = y_ptr + bi * s_yb + hi64 * s_yh
    m_base = mask_ptr + bi * s_mb
    causal = ii[:, None] >= ii[None, :]
    is_last = ii == BT - 1

    for t0 in range(0, T, BT):
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
        # steps past T and pads: Δ = 0, so they neither decay the state nor add to it (softplus(bias) ≠ 0)
        delta = tl.where(keep, delta, 0.0)
        cs = tl.cumsum(delta * a2, axis=0)                      # log2 decay from the chunk start, ≤ 0
        cs_last = tl.sum(tl.where(is_last, cs, 0.0), axis=0)

        xt = tl.load(x_base + t64[:, None] * s_xt + offs_p[None, :], mask=mt[:, None] & mp[None, :], other=0.0)
        bt = tl.load(b_base + t64[:, None] * s_bt + offs_n[None, :], mask=mt[:, None] & mn[None, :], other=0.0)
        ct = tl.load(c_base + t64[:, None] * s_ct + offs_n[None, :], mask=mt[:, None] & mn[None, :], other=0.0)
        xf = xt.to(tl.float32)
        xdt = xf * delta[:, None]                               # [BT, BLOCK_P]

        # state entering the chunk, read out at every position and decayed to it: exp(cs_l) (S C_l)
        y = tl.dot(ct.to(MIX_DOT), tl.trans(S.to(MIX_DOT)), input_precision=MIX_PREC)
        y = y * tl.exp2(cs)[:, None]
        # intra-chunk (diagonal block): (C Bᵀ ⊙ L)(x Δ); -inf above the diagonal before the exp (cs_l − cs_s
        # is ≥ 0 there and could overflow)
        cb = tl.dot(ct.to(IN_DOT), tl.trans(bt.to(IN_DOT)), input_precision=IN_PREC)
        decay = tl.exp2(tl.where(causal, cs[:, None] - cs[None, :], float("-inf")))
        y = tl.dot((cb * decay).to(MIX_DOT), xdt.to(MIX_DOT), acc=y, input_precision=MIX_PREC)
        if HAS_D:
            y = y + dv * xf
        tl.store(y_base + t64[:, None] * s_yt + offs_p[None, :], y.to(y_ptr.dtype.element_ty),
                 mask=mt[:, None] & mp[None, :])

        # state leaving the chunk: every input decayed to the chunk end
        w = tl.exp2(cs_last - cs)                               # [BT], ≤ 1
        S = tl.dot(tl.trans((xdt * w[:, None]).to(MIX_DOT)), bt.to(MIX_DOT), acc=S * tl.exp2(cs_last),
                   input_precision=MIX_PREC)
    tl.store(ht_ptr + state_off, S, mask=mpn)


@triton.jit
def _ssd_step_kernel(
    state_ptr, x_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, dtb_ptr, y_ptr,
    H, P, N, REP, dt_min, dt_max, s_xb, s_xh, s_dtb, s_dth, s_bb, s_bg, s_cb, s_cg, s_yb, s_yh,
    HAS_D: tl.constexpr, HAS_DTB: tl.constexpr, DT_SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    bi, hi, hi64, gi, offs_p, offs_n, mp, mn, mpn, state_off = _program_tile(H, P, N, REP, BLOCK_P, BLOCK_N)
    S = tl.load(state_ptr + state_off, mask=mpn, other=0.0).to(tl.float32)  # a 16-bit state: float32 math
    dt = tl.load(dt_ptr + bi * s_dtb + hi64 * s_dth).to(tl.float32)
    if HAS_DTB:
        dt = dt + tl.load(dtb_ptr + hi).to(tl.float32)
    delta = _discretise(dt, dt_min, dt_max, DT_SOFTPLUS, HAS_LIMIT)
    a2 = tl.load(a_ptr + hi).to(tl.float32) * 1.4426950408889634
    x = tl.load(x_ptr + bi * s_xb + hi64 * s_xh + offs_p, mask=mp, other=0.0).to(tl.float32)
    bt = tl.load(b_ptr + bi * s_bb + gi * s_bg + offs_n, mask=mn, other=0.0).to(tl.float32)
    ct = tl.load(c_ptr + bi * s_cb + gi * s_cg + offs_n, mask=mn, other=0.0).to(tl.float32)
    S = S * tl.exp2(delta * a2) + (delta * x)[:, None] * bt[None, :]
    tl.store(state_ptr + state_off, S.to(state_ptr.dtype.element_ty), mask=mpn)
    y = tl.sum(S * ct[None, :], axis=1)  # the unrounded state, as mamba_ssm's selective_state_update
    if HAS_D:
        y = y + tl.load(d_ptr + hi).to(tl.float32) * x
    tl.store(y_ptr + bi * s_yb + hi64 * s_yh + offs_p, y.to(y_ptr.dtype.element_ty), mask=mp)


# ----------------------------------------------------------------------------------------- host
def interpreting() -> bool:
    """True when the kernels were built by Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return type(_ssd_prefill_kernel).__name__ == "InterpretedFunction"


_IN_DOT = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def _dot_config(dtype: torch.dtype, mix: str):
    """(dtype, input_precision) of the raw-input dot C Bᵀ and of the dots of derived operands. fp32 inputs:
    fp32 operands, 3xTF32 on tensor cores (about fp32 accuracy). 16-bit inputs: C Bᵀ in the input dtype
    (exact products, fp32 accumulation); derived operands in bf16 (an fp16 copy of a state or of C Bᵀ
    could overflow) or, with ``mix="tf32"``, fp32 operands in TF32. Triton's CPU interpreter cannot multiply
    bf16 (it matmuls the raw uint16 bits), so there every dot runs in fp32."""
    if interpreting():
        return tl.float32, "ieee", tl.float32, "ieee"
    if dtype not in _IN_DOT or dtype == torch.float32:
        return tl.float32, "tf32x3", tl.float32, "tf32x3"
    if mix == "tf32":
        return _IN_DOT[dtype], "ieee", tl.float32, "tf32"
    if mix != "bf16":
        raise ValueError(f"SSD config 'mix' must be 'bf16' or 'tf32', got {mix!r}")
    return _IN_DOT[dtype], "ieee", tl.bfloat16, "ieee"


def _default_config(p: int, dtype: torch.dtype) -> dict:
    """Chunks of 32 tokens, derived operands in TF32. 16-bit inputs: half a head (32 channels) per program and
    one warpgroup -- measured on an H100 (``benchmarks/ssd.py``, Mamba-2-130M widths, batch 32 × 1900, 2026-11-23):
    1.10 ms per layer against 1.73 for the whole head on two warpgroups (twice the programs, so two per SM
    instead of one walking the chunks; 220 registers, no spill); 16-token chunks 1.20-1.42, 64-token 1.83.
    fp32 inputs keep the whole head on 8 warps (3xTF32 operands spill in every config tried). On CUDA the launch
    adds a register cap when there are programs enough (:func:`register_cap`). ``JRT_EVAL_SSD_CONFIG`` (JSON)
    overrides it for tuning runs."""
    full = min(64, max(16, triton.next_power_of_2(p)))
    if dtype == torch.float32:
        cfg = dict(BT=32, BLOCK_P=full, num_warps=8, num_stages=1, mix="tf32")
    else:
        cfg = dict(BT=32, BLOCK_P=min(32, full), num_warps=4, num_stages=2, mix="tf32")
    override = os.environ.get("JRT_EVAL_SSD_CONFIG")
    if override:
        cfg.update(json.loads(override))
    return cfg


def register_cap(cfg: dict, dtype: torch.dtype, programs: int, sms: Optional[int]) -> Optional[int]:
    """``maxnreg`` for the prefill launch, or None. The one-warpgroup 16-bit kernel compiles to ~220 registers,
    so two programs share an SM, each stalled on its chain of small matmuls; capped at 168 (a few spilled
    values), three do, which hides more of that latency -- when there are programs to fill them. Measured on
    an H100 (``benchmarks/ssd.py``, 2026-11-23, Mamba-2-130M widths): batch 32 x 1900 1.00 vs 1.10 ms, 32 x 950
    0.51 vs 0.57, 8 x 1900 0.25 vs 0.36; batch 1 x 2048 (48 programs, fewer than the SMs) 0.19 vs 0.16, so
    no cap when every program already has a slot at two per SM. ``cfg["maxnreg"]`` overrides (0: no cap);
    ``sms`` None (no GPU: compiles ahead of time) applies only that override."""
    if "maxnreg" in cfg:
        return int(cfg["maxnreg"]) or None
    if sms is None or dtype == torch.float32 or cfg["num_warps"] != 4 or programs <= 2 * sms:
        return None
    return 168


LAST_KERNEL = None  # the compiled prefill kernel of the last launch (benchmarks read n_regs / n_spills)
_FITS: dict = {}  # (device, dtype, p, n, config) -> the (BT, BLOCK_P, num_warps, num_stages) that launched


def _param(t):
    return t if t is None else t.float().contiguous()


def _limits(dt_limit):
    lo, hi = (float(v) for v in dt_limit)
    return (lo, hi) != (0.0, math.inf), lo, (hi if math.isfinite(hi) else 3.0e38)


def ssd_prefill_triton(x, dt, A, B, C, chunk_size: Optional[int] = None, D=None, dt_bias=None, dt_softplus=True,
                       dt_limit=(0.0, float("inf")), mask=None, initial_state=None, out_dtype=None,
                       config: Optional[dict] = None):
    """Mamba-2 SSD over a prompt, the contract of :func:`scan.ssd_chunked`: ``x [b, T, h, p]``, ``dt [b, T, h]``,
    ``A [h]`` (negative), ``B, C [b, T, g, n]``, ``D, dt_bias [h]``, ``mask [b, T]`` (1 = real token; a pad has
    Δ = 0), ``initial_state [b, h, p, n]``. Returns ``(y [b, T, h, p] in out_dtype (default x.dtype), final state
    [b, h, p, n] float32)``. ``chunk_size`` is accepted for that contract and not used: the kernel's chunk is
    ``config["BT"]`` (exact for any length). ``config``: BT, BLOCK_P, num_warps, num_stages, mix (see the module
    docstring)."""
    x, dt, B, C = (_last_contiguous(t) for t in (x, dt, B, C))
    b, T, h, p = x.shape
    g, n = B.shape[-2:]
    if h % g:
        raise ValueError(f"{h} heads do not split into {g} groups")
    cfg = dict(_default_config(p, x.dtype), **(config or {}))
    y = torch.empty(b, T, h, p, device=x.device, dtype=out_dtype or x.dtype)
    if T == 0:
        ht = (torch.zeros(b, h, p, n, device=x.device) if initial_state is None
              else initial_state.float().clone())
        return y, ht
    ht = torch.empty(b, h, p, n, device=x.device, dtype=torch.float32)
    if mask is not None:
        mask = mask.to(torch.int32)
    if initial_state is not None:
        initial_state = initial_state.float().contiguous()
    A, D, dt_bias = _param(A), _param(D), _param(dt_bias)
    has_limit, lo, hi = _limits(dt_limit)
    in_dot, in_prec, mix_dot, mix_prec = _dot_config(x.dtype, cfg["mix"])
    dummy = A
    args = (
        x, dt, A, B, C, D if D is not None else dummy, dt_bias if dt_bias is not None else dummy,
        mask if mask is not None else dummy, initial_state if initial_state is not None else dummy, y, ht,
        T, h, p, n, h // g, lo, hi,
        x.stride(0), x.stride(1), x.stride(2), dt.stride(0), dt.stride(1), dt.stride(2),
        B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        mask.stride(0) if mask is not None else 0, mask.stride(1) if mask is not None else 0,
        y.stride(0), y.stride(1), y.stride(2),
    )
    flags = dict(
        HAS_D=D is not None, HAS_DTB=dt_bias is not None, DT_SOFTPLUS=bool(dt_softplus), HAS_LIMIT=has_limit,
        HAS_MASK=mask is not None, HAS_H0=initial_state is not None, BLOCK_N=max(16, triton.next_power_of_2(n)),
        IN_DOT=in_dot, IN_PREC=in_prec, MIX_DOT=mix_dot, MIX_PREC=mix_prec,
    )
    maxnreg = None  # the interpreter has no registers to cap
    if not interpreting():
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else None
        maxnreg = register_cap(cfg, x.dtype, b * h * triton.cdiv(p, cfg["BLOCK_P"]), sms)
    key = (x.device, x.dtype, p, n, json.dumps(cfg, sort_keys=True), maxnreg)
    tiles = _FITS.get(key)
    if tiles is None:
        # a config that does not fit this GPU's shared memory (wide d_state, fp32 tiles, several stages): fall
        # back to one stage, then to chunks of 32 tokens; the chunk length does not change the result. What
        # fitted is remembered, so a failing config is compiled once, not at every call.
        tries = [(cfg["BT"], cfg["BLOCK_P"], cfg["num_warps"], cfg["num_stages"]),
                 (cfg["BT"], cfg["BLOCK_P"], cfg["num_warps"], 1), (32, min(cfg["BLOCK_P"], 64), 4, 1)]
    else:
        tries = [tiles]
    for i, (bt, block_p, warps, stages) in enumerate(tries):
        try:
            _launch(args, flags, b * h, p, bt, block_p, warps, stages, maxnreg)
        except OutOfResources:
            if i == len(tries) - 1:
                raise
            continue
        _FITS[key] = (bt, block_p, warps, stages)
        break
    return y, ht



def _launch(args, flags, programs, p, bt, block_p, warps, stages, maxnreg=None):
    """``maxnreg``: a register cap (:func:`register_cap`), so more programs fit an SM."""
    global LAST_KERNEL
    grid = (programs, triton.cdiv(p, block_p))
    LAST_KERNEL = _ssd_prefill_kernel[grid](*args, **flags, BT=bt, BLOCK_P=block_p, num_warps=warps,
                                            num_stages=stages, **({"maxnreg": maxnreg} if maxnreg else {}))


def ssd_step_triton(state, x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=True, dt_limit=(0.0, float("inf")),
                    out_dtype=None, out=None, block_p: int = 32, num_warps: int = 4):
    """One Mamba-2 decode token: ``state [b, h, p, n]`` (contiguous; float32, or 16-bit: float32 math, the new
    state rounded once on store) is updated in place; ``x [b, h, p]``,
    ``dt [b, h]``, ``B, C [b, g, n]``, ``A, D, dt_bias [h]`` (float32, contiguous: no copy is made when they
    already are). Returns ``y [b, h, p]`` (incl. ``D x``) in out_dtype (default x.dtype), or written into
    ``out``. Allocates nothing else and never syncs: CUDA-graph capturable."""
    assert state.dtype in STATE_DTYPES and state.is_contiguous()
    x, dt, B, C = (_last_contiguous(t) for t in (x, dt, B, C))
    b, h, p, n = state.shape
    g = B.shape[-2]
    A, D, dt_bias = _param(A), _param(D), _param(dt_bias)
    has_limit, lo, hi = _limits(dt_limit)
    y = out if out is not None else torch.empty(b, h, p, device=x.device, dtype=out_dtype or x.dtype)
    dummy = A
    block_p = min(block_p, max(16, triton.next_power_of_2(p)))
    grid = (b * h, triton.cdiv(p, block_p))
    _ssd_step_kernel[grid](
        state, x, dt, A, B, C, D if D is not None else dummy, dt_bias if dt_bias is not None else dummy, y,
        h, p, n, h // g, lo, hi, x.stride(0), x.stride(1), dt.stride(0), dt.stride(1),
        B.stride(0), B.stride(1), C.stride(0), C.stride(1), y.stride(0), y.stride(1),
        HAS_D=D is not None, HAS_DTB=dt_bias is not None, DT_SOFTPLUS=bool(dt_softplus), HAS_LIMIT=has_limit,
        BLOCK_P=block_p, BLOCK_N=max(16, triton.next_power_of_2(n)), num_warps=num_warps,
    )
    return y
