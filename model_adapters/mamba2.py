"""Mamba-2 (state-spaces/mamba2-*): mamba_ssm-format checkpoints on transformers' ``Mamba2ForCausalLM``,
with our own memory-bounded prefill and lean decode behind the jrt-eval interface (base.py).

Format (reference-models.md §6.1): ``config.json`` ``{d_model, d_intermediate: 0, n_layer, vocab_size,
ssm_cfg: {"layer": "Mamba2", ...}, attn_layer_idx: [], rms_norm, residual_in_fp32, fused_add_norm,
pad_vocab_size_multiple: 16, tie_embeddings: true}`` and ``pytorch_model.bin``; transformers-format folders
(``model_type: "mamba2"``) load too. The conversion overrides every transformers default that differs from
mamba_ssm's Mamba2 (§9): ``n_groups`` = ngroups (1, not 8), tied embeddings, padded vocabulary rows (50288),
``num_heads = expand·d_model / headdim``, ``head_dim`` 64, ``state_size`` 128, ``chunk_size`` 256, the conv
kernel, biases and ``dt_limit`` — all read from ``ssm_cfg`` with mamba_ssm's defaults. transformers' gated norm
is gate-then-norm = mamba_ssm's ``norm_before_gate=False`` (the released checkpoints); other variants
(``norm_before_gate``, ``D_has_hdim``, ``d_ssm < d_inner``, no ``rmsnorm``) are refused by name.

Compute paths (``impl``): ``"fast"`` (default) — our layer loop. On CUDA (``kernels="auto"`` or ``"triton"``): the
SSD prefill in one Triton kernel (``kernels/mamba/ssd_triton.py``: state in registers, chunks on tensor cores) and
a fused Triton decode step, the causal conv and the norms in Triton too (``conv_triton.py``, ``norm_triton.py``;
on an H100 this path generated 4.3-5.2x faster than the PyTorch one, the same greedy text on 97-100% of rows,
benchmarks/gpu_check_ssm.py). With ``kernels="torch"`` and on CPU: the SSD chunked in PyTorch one chunk at a
time (``kernels/mamba/scan.py``: peak memory a few ``[b, heads, 256, 256]`` tensors, where transformers'
fallback broadcasts a ``[b, chunks, 256, 256, heads, head_dim]`` product, ~96 GiB at batch 32 × 1900 tokens).
LM head on the last position only; decode replayed as a CUDA graph on GPU. ``"hf"`` — transformers' own
forward/cache. Both kernel paths read x, B, C in the model dtype and run the state in float32, so a prefill by
one hands over to a decode by the other. Between decode steps the state is kept in the weights' dtype, as
mamba_ssm's cache (float32 math, one rounding per step; ``state_dtype="float32"`` keeps it in float32).
Padding: pads are zeroed before the conv and get Δ = 0 (no decay, no input): left padding is exact.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from jrt_eval.kernels.mamba import causal_conv1d, conv_step, conv_tail, gated_rms_norm, ssd_prefill, ssd_step

from .hub import CheckpointError, checkpoint_dir, override_config, read_config, read_state_dict
from .mamba import MambaBackboneLM, load_weights
from .ssm_common import (
    cfg_bool, cfg_float, cfg_int, mamba_ssm_to_hf_keys, meta_shapes, padded_vocab, random_ssm_weights,
    save_mamba_ssm_checkpoint,
)

log = logging.getLogger("jrt_eval")

# mamba_ssm modules/mamba2.py Mamba2.__init__: settable through ssm_cfg (defaults) / init-only arguments
_SSM_DEFAULTS = {"d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64, "ngroups": 1, "bias": False,
                 "conv_bias": True, "chunk_size": 256, "dt_limit": [0.0, float("inf")], "rmsnorm": True,
                 "norm_before_gate": False, "D_has_hdim": False, "d_ssm": None}
_SSM_INIT_ONLY = {"conv_init", "A_init_range", "dt_min", "dt_max", "dt_init_floor", "use_mem_eff_path", "layer",
                  "process_group", "sequence_parallel"}
NORM_EPS = 1e-5  # MixerModel norm_epsilon and Mamba2's RMSNormGated eps (both fixed in mamba_ssm)
FP32_PARAMS = ("A_log", "mixer.D", "dt_bias")


@dataclass(frozen=True)
class Mamba2Spec:
    d_model: int
    n_layer: int
    vocab_size: int
    vocab_rows: int
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    bias: bool = False
    conv_bias: bool = True
    chunk_size: int = 256
    dt_limit: tuple = (0.0, float("inf"))
    eps: float = NORM_EPS
    residual_in_fp32: bool = True
    tie: bool = True
    fmt: str = "mamba_ssm"

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.ngroups * self.d_state


# ===================================================================================== config
def detect(config: dict) -> bool:
    """A Mamba-2 config.json: mamba_ssm format with ``ssm_cfg.layer == "Mamba2"`` or transformers' ``mamba2``."""
    if not isinstance(config, dict):
        return False
    if config.get("model_type") == "mamba2":
        return True
    ssm = config.get("ssm_cfg")
    return "d_model" in config and isinstance(ssm, dict) and ssm.get("layer") == "Mamba2"


def _limit(value, where) -> tuple:
    if value is None:
        return (0.0, float("inf"))
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise CheckpointError(f"{where}: dt_limit must be [min, max], got {value!r}")
    lo, hi = (float(v) for v in value)
    if not 0.0 <= lo < hi:
        raise CheckpointError(f"{where}: dt_limit {value!r} is not an interval of non-negative values")
    return (lo, hi)


def parse_config(config: dict, where: str = "config.json") -> Mamba2Spec:
    if not isinstance(config, dict):
        raise CheckpointError(f"{where} must hold a JSON object, got {type(config).__name__}")
    if config.get("model_type") == "mamba2":
        return _parse_hf(config, where)
    if not detect(config):
        raise CheckpointError(f"{where} is not a Mamba-2 config (needs d_model and ssm_cfg.layer 'Mamba2', or "
                              f"model_type 'mamba2')")
    ssm = config["ssm_cfg"]
    unknown = sorted(set(ssm) - set(_SSM_DEFAULTS) - _SSM_INIT_ONLY)
    if unknown:
        raise CheckpointError(f"{where}: unsupported Mamba2 ssm_cfg keys {unknown}")
    s = {**_SSM_DEFAULTS, **ssm}
    sw = f"{where} ssm_cfg"
    for key, ok in (("rmsnorm", True), ("norm_before_gate", False), ("D_has_hdim", False)):
        if cfg_bool(s, key, ok, sw) != ok:
            raise CheckpointError(f"{sw}: {key}={s[key]!r} is not supported (the released Mamba-2 use {ok})")
    if not cfg_bool(config, "rms_norm", True, where):
        raise CheckpointError(f"{where}: rms_norm false (LayerNorm blocks) is not supported")
    if cfg_int(config, "d_intermediate", 0, where, minimum=0):
        raise CheckpointError(f"{where}: d_intermediate > 0 (Mamba-2 blocks with MLPs) is not supported")
    if config.get("attn_layer_idx"):
        raise CheckpointError(f"{where}: attn_layer_idx {config['attn_layer_idx']} (hybrid attention) is not supported")
    d_model = cfg_int(config, "d_model", where=where)
    expand, headdim = cfg_int(s, "expand", where=sw), cfg_int(s, "headdim", where=sw)
    if s["d_ssm"] is not None and s["d_ssm"] != expand * d_model:
        raise CheckpointError(f"{sw}: d_ssm {s['d_ssm']} < d_inner (SSM on part of the channels) is not supported")
    if (expand * d_model) % headdim:
        raise CheckpointError(f"{sw}: d_inner {expand * d_model} is not a multiple of headdim {headdim}")
    ngroups = cfg_int(s, "ngroups", where=sw)
    if ((expand * d_model) // headdim) % ngroups:
        raise CheckpointError(f"{sw}: {(expand * d_model) // headdim} heads do not split into {ngroups} groups")
    vocab = cfg_int(config, "vocab_size", where=where)
    return Mamba2Spec(
        d_model=d_model, n_layer=cfg_int(config, "n_layer", where=where), vocab_size=vocab,
        vocab_rows=padded_vocab(vocab, cfg_int(config, "pad_vocab_size_multiple", 1, where)),
        d_state=cfg_int(s, "d_state", where=sw), d_conv=cfg_int(s, "d_conv", where=sw), expand=expand,
        headdim=headdim, ngroups=ngroups, bias=cfg_bool(s, "bias", False, sw),
        conv_bias=cfg_bool(s, "conv_bias", True, sw), chunk_size=cfg_int(s, "chunk_size", where=sw),
        dt_limit=_limit(s["dt_limit"], sw), eps=cfg_float(config, "norm_epsilon", NORM_EPS, where),
        residual_in_fp32=cfg_bool(config, "residual_in_fp32", True, where),
        tie=cfg_bool(config, "tie_embeddings", True, where), fmt="mamba_ssm",
    )


def _parse_hf(config: dict, where: str) -> Mamba2Spec:
    d_model = cfg_int(config, "hidden_size", where=where)
    expand, headdim = cfg_int(config, "expand", 2, where), cfg_int(config, "head_dim", 64, where)
    nheads = cfg_int(config, "num_heads", where=where)
    if nheads * headdim != expand * d_model:
        raise CheckpointError(f"{where}: num_heads {nheads} × head_dim {headdim} != expand × hidden_size "
                              f"{expand * d_model}")
    vocab = cfg_int(config, "vocab_size", where=where)
    return Mamba2Spec(
        d_model=d_model, n_layer=cfg_int(config, "num_hidden_layers", where=where), vocab_size=vocab, vocab_rows=vocab,
        d_state=cfg_int(config, "state_size", 128, where), d_conv=cfg_int(config, "conv_kernel", 4, where),
        expand=expand, headdim=headdim, ngroups=cfg_int(config, "n_groups", 8, where),
        bias=cfg_bool(config, "use_bias", False, where), conv_bias=cfg_bool(config, "use_conv_bias", True, where),
        chunk_size=cfg_int(config, "chunk_size", 256, where),
        dt_limit=_limit(config.get("time_step_limit"), where),
        eps=cfg_float(config, "layer_norm_epsilon", NORM_EPS, where),
        residual_in_fp32=cfg_bool(config, "residual_in_fp32", True, where),
        tie=cfg_bool(config, "tie_word_embeddings", False, where), fmt="hf",
    )


def hf_config(spec: Mamba2Spec):
    """transformers ``Mamba2Config`` with every architecture value set from ``spec``."""
    from transformers import Mamba2Config

    return Mamba2Config(
        vocab_size=spec.vocab_rows, hidden_size=spec.d_model, num_hidden_layers=spec.n_layer,
        num_heads=spec.nheads, head_dim=spec.headdim, state_size=spec.d_state, expand=spec.expand,
        conv_kernel=spec.d_conv, n_groups=spec.ngroups, use_bias=spec.bias, use_conv_bias=spec.conv_bias,
        hidden_act="silu", chunk_size=spec.chunk_size, time_step_limit=tuple(spec.dt_limit),
        layer_norm_epsilon=spec.eps, residual_in_fp32=spec.residual_in_fp32, tie_word_embeddings=spec.tie,
        pad_token_id=None, bos_token_id=None, eos_token_id=None,
    )


def convert_state_dict(sd: dict, spec: Mamba2Spec, where: str = "checkpoint") -> dict:
    """mamba_ssm / transformers keys → transformers' ``Mamba2ForCausalLM`` keys (tied head resolved)."""
    return mamba_ssm_to_hf_keys(sd, spec.tie, where)


def _expected_shapes(spec: Mamba2Spec) -> dict:
    from transformers import Mamba2ForCausalLM

    return meta_shapes(Mamba2ForCausalLM, hf_config(spec))


# ===================================================================================== model
class Mamba2LM(MambaBackboneLM):
    family = "mamba2"
    FP32_PARAMS = FP32_PARAMS

    def __init__(self, spec: Mamba2Spec, config: Optional[dict] = None, impl: str = "fast", kernels: str = "auto"):
        super().__init__(spec, config, impl)
        from transformers import Mamba2ForCausalLM

        if kernels not in ("auto", "torch", "triton"):
            raise ValueError(f"unknown kernels {kernels!r} for mamba2; use auto, torch or triton")
        self.kernels = kernels
        self.hf = Mamba2ForCausalLM(hf_config(spec))

    def _mixer(self, m, h, mask, want_state):
        s = self.spec
        b, T, _ = h.shape
        z, xBC, dt = torch.split(m.in_proj(h), [s.d_inner, s.conv_dim, s.nheads], dim=-1)
        xBCc = causal_conv1d(xBC, m.conv1d.weight[:, 0], m.conv1d.bias, mask=mask, backend=self.kernels)
        x, B, C = torch.split(xBCc, [s.d_inner, s.ngroups * s.d_state, s.ngroups * s.d_state], dim=-1)
        # x, B, C: strided views of the conv output in the model dtype; y in float32 for the gated norm
        y, S = ssd_prefill(
            x.reshape(b, T, s.nheads, s.headdim), dt, self._neg_exp_A(m),
            B.reshape(b, T, s.ngroups, s.d_state), C.reshape(b, T, s.ngroups, s.d_state), s.chunk_size,
            D=m.D.float(), dt_bias=m.dt_bias.float(), dt_limit=s.dt_limit, mask=mask, backend=self.kernels,
            out_dtype=torch.float32,
        )
        # mamba_ssm RMSNormGated, norm_before_gate=False: g = y ⊙ silu(z), RMS-normalised per group
        y = gated_rms_norm(y.reshape(b, T, s.d_inner), z, m.norm.weight, s.eps, s.ngroups, h.dtype,
                           backend=self.kernels)
        state = {"conv": conv_tail(xBC, s.d_conv, mask), "ssm": self._decode_state(S)} if want_state else None
        return m.out_proj(y), state

    def _mixer_step(self, m, h, st):
        """One token through a mixer; ``st`` (conv window, SSM state) updated in place."""
        s = self.spec
        Bn, G, H, P, N = h.shape[0], s.ngroups, s.nheads, s.headdim, s.d_state
        z, xBC, dt = torch.split(m.in_proj(h), [s.d_inner, s.conv_dim, s.nheads], dim=-1)
        # x, B, C in the model dtype: the prefill scan reads them in the model dtype too
        xc = conv_step(st["conv"], xBC, m.conv1d.weight[:, 0], m.conv1d.bias, out_dtype=h.dtype, backend=self.kernels)
        x, B, C = torch.split(xc, [s.d_inner, G * N, G * N], dim=-1)
        y = ssd_step(st["ssm"], x.view(Bn, H, P), dt, self._neg_exp_A(m), B.view(Bn, G, N),
                     C.view(Bn, G, N), D=m.D.float(), dt_bias=m.dt_bias.float(), dt_limit=s.dt_limit,
                     backend=self.kernels, out_dtype=torch.float32)
        y = gated_rms_norm(y.reshape(Bn, s.d_inner), z, m.norm.weight, s.eps, G, h.dtype, backend=self.kernels)
        return m.out_proj(y)


# ===================================================================================== loading
def build_model(spec: Mamba2Spec, config: Optional[dict] = None, device=None, **opts) -> Mamba2LM:
    with torch.device(device or "cpu"):
        return Mamba2LM(spec, config, **opts)


def load_model(pretrained: str, *, device="cpu", dtype: torch.dtype = torch.float32, impl: str = "fast",
               kernels: str = "auto", cuda_graphs: bool = True, max_length: int = 2048,
               state_dtype: str = "model") -> Mamba2LM:
    """Load a Mamba-2 checkpoint (hub id or folder; mamba_ssm or transformers format), strictly.
    ``state_dtype``: the decode's SSM state, "model" (the weights' dtype, as mamba_ssm) or "float32"."""
    folder = checkpoint_dir(pretrained)
    config = read_config(folder)
    spec = parse_config(config, f"{folder}/config.json")
    model = build_model(spec, config, device="meta", impl=impl, kernels=kernels)
    return load_weights(model, read_state_dict(folder), str(folder), device, dtype, cuda_graphs, max_length,
                        state_dtype)


# ===================================================================================== tiny checkpoints
def tiny_config(**overrides) -> dict:
    """A small config.json with state-spaces/mamba2-130m's keys (vocab 50277 → 50288 rows, GPT-NeoX);
    ``ssm_cfg`` sets small widths (headdim 16, d_state 16, chunk 16) so that tests cross chunk borders."""
    cfg = {"d_model": 64, "d_intermediate": 0, "n_layer": 3, "vocab_size": 50277,
           "ssm_cfg": {"layer": "Mamba2", "d_state": 16, "headdim": 16, "chunk_size": 16},
           "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
           "pad_vocab_size_multiple": 16, "tie_embeddings": True}
    return override_config(cfg, overrides)


def random_mamba2_weights(spec: Mamba2Spec, seed: int = 0, device="cpu") -> "OrderedDict[str, torch.Tensor]":
    """Deterministic random weights in transformers' names; A in [1, 16] per head (mamba_ssm's init range)."""
    def a_log(shape, randn, rand):
        return torch.log(1 + 15 * rand(shape))

    return random_ssm_weights(_expected_shapes(spec), spec.n_layer, spec.tie, a_log, seed, device)


def write_tiny_checkpoint(out_dir, seed: int = 0, **overrides) -> Path:
    """Write a tiny random Mamba-2 checkpoint in the published mamba_ssm format: config.json with
    ``ssm_cfg: {"layer": "Mamba2", ...}`` and ``tie_embeddings``, pytorch_model.bin with ``backbone.embedding``
    and a tied ``lm_head.weight`` (GPT-NeoX vocabulary, 50277 → 50288 rows)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_config(**overrides)
    spec = parse_config(config)
    save_mamba_ssm_checkpoint(out, config, random_mamba2_weights(spec, seed), spec.tie)
    return out
