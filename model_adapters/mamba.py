"""Mamba (state-spaces/mamba-* and hazyresearch/mamba-*): mamba_ssm-format checkpoints on transformers'
``MambaForCausalLM``, with our own fast prefill / decode behind the jrt-eval interface (base.py).

    model = load_model("state-spaces/mamba-130m")           # or a local folder
    logits = model(input_ids, attention_mask)               # [B, T, V] float32
    last, cache = model.prefill(input_ids, attention_mask)  # then model.step(next_ids, cache)

Formats (reference-models.md §5.1):

* mamba_ssm: ``config.json`` ``{d_model, n_layer, vocab_size, ssm_cfg, rms_norm, residual_in_fp32,
  fused_add_norm, pad_vocab_size_multiple[, d_intermediate, attn_layer_idx, attn_cfg, tie_embeddings]}`` and
  ``pytorch_model.bin`` with ``backbone.embedding.weight``, ``backbone.layers.{i}.mixer.*``, ``norm_f``,
  (tied) ``lm_head.weight``. The hazyresearch variant adds GPT keys (``n_embd``, ``n_head``, ...) to the
  config and may prefix weights with ``model.`` plus ``*metrics*`` counters (dropped, as REF does).
* transformers (``-hf`` repos): ``model_type: "mamba"`` config and ``backbone.embeddings.*`` weights.

Both are converted in memory to a ``transformers.MambaConfig`` whose every value comes from config.json
(transformers' defaults, e.g. 32 layers / width 768, never leak in), loaded strictly: missing, unexpected
and mis-shaped tensors are named in a :class:`CheckpointError`.

Compute paths (``impl``):

* ``"fast"`` (default): our own layer loop on the transformers modules' weights. Prefill runs the selective
  scan in one Triton kernel on CUDA (``kernels/mamba/selective_scan.py``) or a blocked PyTorch scan on CPU,
  and computes the LM head for the last position only; decode is a lean per-layer step (a fused Triton
  state update on CUDA) replayed as a CUDA graph. Residual stream in float32 (``residual_in_fp32``), norms
  on the float32 residual as mamba_ssm's fused add+norm; ``A_log``, ``D``, ``dt_proj.bias`` stay float32
  under a half-precision model.
* ``"hf"``: transformers' own forward and cache (its PyTorch fallbacks), the independent reference.

Padding: pads are zeroed before the convolution and get Δ = 0 in the scan (no decay, no input), so a
left-padded row is exactly the unpadded row (transformers' masking reaches the same for left padding).
"""
from __future__ import annotations

import functools
import inspect
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from jrt_eval.kernels.mamba import causal_conv1d, conv_step, conv_tail, selective_scan_fn, selective_state_update

from .hub import CheckpointError, checkpoint_dir, read_config, read_state_dict
from .ssm_common import (
    RecurrentLM, cfg_bool, cfg_float, cfg_int, check_state_dict, mamba_ssm_to_hf_keys, meta_shapes, padded_vocab,
    random_ssm_weights, resolve_tied_head, save_mamba_ssm_checkpoint,
)

log = logging.getLogger("jrt_eval")

# mamba_ssm's Mamba (mamba_simple.py) constructor: what ssm_cfg may set, and the defaults
_SSM_DEFAULTS = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "conv_bias": True, "bias": False}
_SSM_INIT_ONLY = {"dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor", "use_fast_path", "layer"}
NORM_EPS = 1e-5  # mamba_ssm MixerModel ``norm_epsilon`` default; config.json does not carry it
FP32_PARAMS = ("A_log", "D", "dt_proj.bias")  # kept float32 under a half-precision model


@dataclass(frozen=True)
class MambaSpec:
    d_model: int
    n_layer: int
    vocab_size: int  # as in config.json (the tokenizer's size for mamba_ssm files)
    vocab_rows: int  # embedding rows after padding
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0
    conv_bias: bool = True
    bias: bool = False
    eps: float = NORM_EPS
    residual_in_fp32: bool = True
    tie: bool = True
    fmt: str = "mamba_ssm"  # or "hf"
    hazy: bool = False

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


# ===================================================================================== config
def detect(config: dict) -> bool:
    """A Mamba-1 config.json: mamba_ssm format (d_model + n_layer, no Mamba-2 layer) or transformers' ``mamba``."""
    if not isinstance(config, dict):
        return False
    if config.get("model_type") == "mamba":
        return True
    if "d_model" in config and "n_layer" in config:
        ssm = config.get("ssm_cfg") or {}
        return isinstance(ssm, dict) and ssm.get("layer", "Mamba1") == "Mamba1"
    return False


def parse_config(config: dict, where: str = "config.json") -> MambaSpec:
    if not isinstance(config, dict):
        raise CheckpointError(f"{where} must hold a JSON object, got {type(config).__name__}")
    if config.get("model_type") == "mamba":
        return _parse_hf(config, where)
    if not detect(config):
        raise CheckpointError(f"{where} is not a Mamba config (needs mamba_ssm's d_model/n_layer or model_type "
                              f"'mamba'; got keys {sorted(config)[:12]})")
    ssm = config.get("ssm_cfg") or {}
    if not isinstance(ssm, dict):
        raise CheckpointError(f"{where}: ssm_cfg must be an object, got {ssm!r}")
    unknown = sorted(set(ssm) - set(_SSM_DEFAULTS) - _SSM_INIT_ONLY)
    if unknown:
        raise CheckpointError(f"{where}: unsupported Mamba ssm_cfg keys {unknown}")
    if not cfg_bool(config, "rms_norm", True, where):
        raise CheckpointError(f"{where}: rms_norm false (LayerNorm Mamba) is not supported")
    if cfg_int(config, "d_intermediate", 0, where, minimum=0):
        raise CheckpointError(f"{where}: d_intermediate > 0 (Mamba blocks with MLPs) is not supported")
    if config.get("attn_layer_idx"):
        raise CheckpointError(f"{where}: attn_layer_idx {config['attn_layer_idx']} (hybrid attention) is not supported")
    d_model = cfg_int(config, "d_model", where=where)
    s = {**_SSM_DEFAULTS, **{k: v for k, v in ssm.items() if k in _SSM_DEFAULTS}}
    dt_rank = s["dt_rank"]
    dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else cfg_int({"dt_rank": dt_rank}, "dt_rank", where=where)
    vocab = cfg_int(config, "vocab_size", where=where)
    multiple = cfg_int(config, "pad_vocab_size_multiple", 1, where)
    return MambaSpec(
        d_model=d_model, n_layer=cfg_int(config, "n_layer", where=where), vocab_size=vocab,
        vocab_rows=padded_vocab(vocab, multiple),
        d_state=cfg_int(s, "d_state", where=f"{where} ssm_cfg"), d_conv=cfg_int(s, "d_conv", where=f"{where} ssm_cfg"),
        expand=cfg_int(s, "expand", where=f"{where} ssm_cfg"), dt_rank=dt_rank,
        conv_bias=cfg_bool(s, "conv_bias", True, f"{where} ssm_cfg"), bias=cfg_bool(s, "bias", False, f"{where} ssm_cfg"),
        eps=cfg_float(config, "norm_epsilon", NORM_EPS, where),
        residual_in_fp32=cfg_bool(config, "residual_in_fp32", True, where),
        tie=cfg_bool(config, "tie_embeddings", True, where),
        fmt="mamba_ssm", hazy="n_embd" in config or "n_head" in config,
    )


def _parse_hf(config: dict, where: str) -> MambaSpec:
    d_model = cfg_int(config, "hidden_size", where=where)
    rank = config.get("time_step_rank", "auto")
    rank = math.ceil(d_model / 16) if rank == "auto" else cfg_int(config, "time_step_rank", where=where)
    if config.get("hidden_act", "silu") not in ("silu", "swish"):
        raise CheckpointError(f"{where}: hidden_act {config.get('hidden_act')!r} is not supported (Mamba uses silu)")
    vocab = cfg_int(config, "vocab_size", where=where)
    return MambaSpec(
        d_model=d_model, n_layer=cfg_int(config, "num_hidden_layers", where=where), vocab_size=vocab, vocab_rows=vocab,
        d_state=cfg_int(config, "state_size", 16, where), d_conv=cfg_int(config, "conv_kernel", 4, where),
        expand=cfg_int(config, "expand", 2, where), dt_rank=rank,
        conv_bias=cfg_bool(config, "use_conv_bias", True, where), bias=cfg_bool(config, "use_bias", False, where),
        eps=cfg_float(config, "layer_norm_epsilon", NORM_EPS, where),
        residual_in_fp32=cfg_bool(config, "residual_in_fp32", True, where),
        tie=cfg_bool(config, "tie_word_embeddings", True, where), fmt="hf",
    )


def hf_config(spec: MambaSpec):
    """transformers ``MambaConfig`` with every architecture value set from ``spec`` (no default left to chance)."""
    from transformers import MambaConfig

    return MambaConfig(
        vocab_size=spec.vocab_rows, hidden_size=spec.d_model, num_hidden_layers=spec.n_layer,
        state_size=spec.d_state, expand=spec.expand, conv_kernel=spec.d_conv, time_step_rank=spec.dt_rank,
        use_bias=spec.bias, use_conv_bias=spec.conv_bias, hidden_act="silu", layer_norm_epsilon=spec.eps,
        residual_in_fp32=spec.residual_in_fp32, tie_word_embeddings=spec.tie, use_mambapy=False,
        pad_token_id=None, bos_token_id=None, eos_token_id=None,
    )


# ===================================================================================== weights
def convert_state_dict(sd: dict, spec: MambaSpec, where: str = "checkpoint") -> dict:
    """mamba_ssm / hazy / transformers keys → transformers' ``MambaForCausalLM`` keys (tied head resolved)."""
    return mamba_ssm_to_hf_keys(sd, spec.tie, where, strip=spec.hazy)


def _expected_shapes(spec: MambaSpec) -> dict:
    from transformers import MambaForCausalLM

    return meta_shapes(MambaForCausalLM, hf_config(spec))


# ===================================================================================== model
def _hf_cache(out):
    """The cache of a transformers Mamba / Mamba-2 output: ``cache`` since 5.25, ``cache_params`` before."""
    return out.cache if "cache" in out.__dataclass_fields__ else out.cache_params


@functools.lru_cache(maxsize=None)
def _hf_cache_kwarg(model_cls) -> str:
    """The forward's cache argument: transformers 5.25 renamed ``cache_params`` to ``cache`` (the old name is
    accepted with a warning until 5.40). Looked up once per class, not per decode step."""
    return "cache" if "cache" in inspect.signature(model_cls.forward).parameters else "cache_params"


class HFCache:
    """transformers' DynamicCache behind base.py's ``select``."""

    def __init__(self, cache):
        self.cache = cache

    def select(self, rows):
        with torch.inference_mode():
            self.cache.reorder_cache(torch.as_tensor(rows, dtype=torch.long))
        return self


class MambaBackboneLM(RecurrentLM):
    """Shared by Mamba and Mamba-2: transformers' modules hold the weights (``self.hf``); ``impl="fast"`` runs
    our layer loop (``_blocks``) around each family's ``_mixer`` (prefill) / ``_mixer_step`` (one decode token),
    ``impl="hf"`` transformers' own forward and cache."""

    FP32_PARAMS: tuple = ()  # parameter-name suffixes kept float32 under a half-precision model

    def __init__(self, spec, config: Optional[dict], impl: str):
        super().__init__()
        if impl not in ("fast", "hf"):
            raise ValueError(f"impl must be 'fast' or 'hf', got {impl!r}")
        self.spec = spec
        self.config = dict(config or {})
        self.vocab_rows = spec.vocab_rows
        self.impl = impl
        self._A_cache: dict = {}  # id(mixer) -> (weight key, -exp(A_log)), see _neg_exp_A
        self.state_dtype = "model"  # of the decode's SSM state: "model" | "float32" (see _decode_state)

    def _prefill_core(self, input_ids, mask, want_state, last_only):
        if self.impl == "hf":
            out = self.hf(input_ids=input_ids, attention_mask=mask, use_cache=want_state,
                          logits_to_keep=1 if last_only else 0)
            return out.logits, (HFCache(_hf_cache(out)) if want_state else None)
        states = []

        def mixer(i, m, h):
            out, st = self._mixer(m, h, mask, want_state)
            states.append(st)
            return out

        return self._blocks(input_ids, mixer, last_only), states

    def _step_core(self, ids, layers):
        return self._blocks(ids, lambda i, m, h: self._mixer_step(m, h, layers[i])).float()

    def _blocks(self, ids, mixer, last_only: bool = False):
        """The pre-norm residual stack shared by prefill and decode: ``mixer(i, block's mixer, normed input)``
        gives each block's output; each residual add is fused with the norm after it (the next block's, the final
        one after the last block). ``last_only``: the last block's add, the final norm and the head on the last
        position only. Returns the head's logits."""
        bb, s = self.hf.backbone, self.spec
        dtype = bb.embeddings.weight.dtype
        resid = bb.embeddings(ids)
        resid = resid.float() if s.residual_in_fp32 else resid
        h = self._rms_norm(resid, bb.layers[0].norm.weight, s.eps, dtype)
        for i, blk in enumerate(bb.layers):
            out = mixer(i, blk.mixer, h)
            last = i + 1 == len(bb.layers)
            if last and last_only:
                resid, out = resid[:, -1:], out[:, -1:]
            nxt = bb.norm_f.weight if last else bb.layers[i + 1].norm.weight
            resid, h = self._add_rms_norm(resid, out, nxt, s.eps, dtype)
        return self.hf.lm_head(h)

    def _decode_state(self, S: torch.Tensor) -> torch.Tensor:
        """The prefill's final SSM state as the decode keeps it (``state_dtype``): the weights' dtype ("model",
        the default: what mamba_ssm's ``allocate_inference_cache`` and transformers' cache hold, so what the
        paper's fp16 runs decoded with, and half the state traffic of a Mamba-2 decode step) or float32
        ("float32": more accurate than the reference). The decode kernels step a 16-bit state in float32 and round
        it once per token. Measured on an H100 (benchmarks/gpu_check_ssm.py, Mamba-2-130M, batch 32 x 1900
        tokens, 48 greedy tokens): 0.095 vs 0.105 s per batch, and the same greedy text as an fp32 run on the
        same share of rows with either state (100% in float16, 91% in bf16 on random weights' near-ties)."""
        if self.state_dtype == "model":
            S = S.to(self.hf.backbone.embeddings.weight.dtype)
        return S.contiguous()

    def _neg_exp_A(self, m) -> torch.Tensor:
        """A = -exp(A_log) in float32, computed once per weight version: every decode step used to launch two
        elementwise kernels per layer for it (~6% of a Mamba-2-130M decode step at batch 32 on an H100). Keyed on
        the tensor's storage and in-place version, so edited or moved weights are picked up."""
        p = m.A_log
        key = (p.data_ptr(), p._version, p.device, p.dtype)
        cached = self._A_cache.get(id(m))
        if cached is None or cached[0] != key:
            cached = (key, -torch.exp(p.detach().float()))
            self._A_cache[id(m)] = cached
        return cached[1]

    def __getstate__(self):  # copies get their own cache (it is keyed on this model's modules)
        return dict(super().__getstate__(), _A_cache={})

    def _step(self, input_ids, cache):
        if isinstance(cache, HFCache):
            out = self.hf(input_ids=input_ids.reshape(-1, 1), **{_hf_cache_kwarg(type(self.hf)): cache.cache},
                          use_cache=True)
            return out.logits[:, -1].float()
        return super()._step(input_ids, cache)


class MambaLM(MambaBackboneLM):
    """Mamba-1 language model: transformers' modules hold the weights; see the module docstring for paths."""

    family = "mamba"
    FP32_PARAMS = FP32_PARAMS

    def __init__(self, spec: MambaSpec, config: Optional[dict] = None, impl: str = "fast", kernels: str = "auto"):
        super().__init__(spec, config, impl)
        from transformers import MambaForCausalLM

        self.kernels = kernels
        self.hf = MambaForCausalLM(hf_config(spec))

    # ------------------------------------------------------------------ fast path
    def _mixer(self, m, h, mask, want_state):
        s = self.spec
        xz = m.in_proj(h)
        x, z = xz[..., : s.d_inner], xz[..., s.d_inner:]
        # a pad never enters a conv window (in_proj may have a bias): the conv reads masked positions as zero
        xc = causal_conv1d(x, m.conv1d.weight[:, 0], m.conv1d.bias, mask=mask, backend=self.kernels)
        dt_low, B, C = torch.split(m.x_proj(xc), [s.dt_rank, s.d_state, s.d_state], dim=-1)
        dt = F.linear(dt_low, m.dt_proj.weight)  # the bias is added in float32 inside the scan
        y, h_last = selective_scan_fn(xc, dt, self._neg_exp_A(m), B, C, D=m.D.float(), z=z,
                                      dt_bias=m.dt_proj.bias.float(), mask=mask, backend=self.kernels,
                                      out_dtype=h.dtype)
        state = {"conv": conv_tail(x, s.d_conv, mask), "ssm": self._decode_state(h_last)} if want_state else None
        return m.out_proj(y), state

    def _mixer_step(self, m, h, st):
        """One token through a mixer; ``st`` (conv window, SSM state) updated in place."""
        s = self.spec
        xz = m.in_proj(h)
        x, z = xz[:, : s.d_inner], xz[:, s.d_inner:]
        xc = conv_step(st["conv"], x, m.conv1d.weight[:, 0], m.conv1d.bias, out_dtype=h.dtype, backend=self.kernels)
        dt_low, B, C = torch.split(m.x_proj(xc), [s.dt_rank, s.d_state, s.d_state], dim=-1)
        dt = F.linear(dt_low, m.dt_proj.weight)
        y = selective_state_update(st["ssm"], xc, dt, self._neg_exp_A(m), B, C, D=m.D.float(), z=z,
                                   dt_bias=m.dt_proj.bias.float(), backend=self.kernels)
        return m.out_proj(y.to(h.dtype))


# ===================================================================================== loading
def build_model(spec: MambaSpec, config: Optional[dict] = None, device=None, **opts) -> MambaLM:
    with torch.device(device or "cpu"):
        return MambaLM(spec, config, **opts)


def cast_model(model: MambaBackboneLM, device, dtype: torch.dtype) -> MambaBackboneLM:
    """``model.to(device, dtype)`` keeping its small recurrence parameters (``model.FP32_PARAMS``) in float32."""
    model.to(device=device, dtype=dtype)
    if dtype != torch.float32:
        for name, p in model.named_parameters():
            if name.endswith(model.FP32_PARAMS):
                p.data = p.data.float()
    return model


STATE_DTYPE_OPTIONS = ("float32", "model")  # see MambaBackboneLM._decode_state


def load_weights(model: MambaBackboneLM, sd: dict, where: str, device="cpu", dtype: torch.dtype = torch.float32,
                 cuda_graphs: bool = True, max_length: int = 2048, state_dtype: str = "model") -> MambaBackboneLM:
    """Strictly load mamba_ssm / transformers weights into a model built on the meta device, then place it."""
    state_dtype = {"fp32": "float32", "float": "float32"}.get(str(state_dtype), str(state_dtype))
    if state_dtype not in STATE_DTYPE_OPTIONS:
        raise ValueError(f"state_dtype must be one of {STATE_DTYPE_OPTIONS}, got {state_dtype!r}")
    sd = mamba_ssm_to_hf_keys(sd, model.spec.tie, where, strip=getattr(model.spec, "hazy", False))
    check_state_dict({k: tuple(v.shape) for k, v in model.hf.state_dict().items()}, sd, where)
    model.hf.load_state_dict(sd, strict=True, assign=True)
    if model.spec.tie:
        model.hf.lm_head.weight = model.hf.backbone.embeddings.weight
    model.cuda_graphs = cuda_graphs
    model.max_length = max_length
    model.state_dtype = state_dtype
    return cast_model(model, device, dtype).eval()


def load_model(pretrained: str, *, device="cpu", dtype: torch.dtype = torch.float32, impl: str = "fast",
               kernels: str = "auto", cuda_graphs: bool = True, max_length: int = 2048,
               state_dtype: str = "model") -> MambaLM:
    """Load a Mamba checkpoint (hub id or folder; mamba_ssm, hazyresearch or transformers format), strictly.
    ``state_dtype``: the decode's SSM state, "model" (the weights' dtype, as mamba_ssm) or "float32"."""
    folder = checkpoint_dir(pretrained)
    config = read_config(folder)
    spec = parse_config(config, f"{folder}/config.json")
    model = build_model(spec, config, device="meta", impl=impl, kernels=kernels)
    return load_weights(model, read_state_dict(folder), str(folder), device, dtype, cuda_graphs, max_length,
                        state_dtype)


# ===================================================================================== tiny checkpoints
def tiny_config(hazy: bool = False, **overrides) -> dict:
    """A small config.json in the published layout: state-spaces/mamba-130m's keys (vocab 50277 → 50280 for
    GPT-NeoX) or hazyresearch's (MambaConfig dataclass dump with GPT keys; vocab 50277 / 16 → 50288, GPT-2
    tokenizer)."""
    cfg = {"d_model": 64, "n_layer": 3, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": True,
           "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8}
    if hazy:
        cfg.update(pad_vocab_size_multiple=16, reorder_and_upcast_attn=False, scale_attn_by_inverse_layer_idx=False,
                   n_positions=2048, n_embd=64, n_head=4, use_flash_attn=False, fused_dropout_add_ln=False,
                   fused_mlp=False, fused_bias_fc=False, use_fast_path=True)
    cfg.update(overrides)
    return cfg


def random_mamba_weights(spec: MambaSpec, seed: int = 0, device="cpu") -> "OrderedDict[str, torch.Tensor]":
    """Deterministic random weights in transformers' names; A = 1..n per channel (mamba_ssm's init) + noise."""
    def a_log(shape, randn, rand):
        return torch.log(torch.arange(1, shape[1] + 1, dtype=torch.float32, device=device)).expand(shape) + 0.1 * randn(shape)

    return random_ssm_weights(_expected_shapes(spec), spec.n_layer, spec.tie, a_log, seed, device)


def write_tiny_checkpoint(out_dir, seed: int = 0, hazy: bool = False, hf_format: bool = False, **overrides) -> Path:
    """Write a tiny random Mamba checkpoint in a published format:

    * default: state-spaces mamba_ssm format (config.json + pytorch_model.bin with ``backbone.embedding`` and a
      tied ``lm_head.weight``), GPT-NeoX vocabulary (50277 → 50280 rows);
    * ``hazy=True``: hazyresearch format (GPT keys in config.json, ``model.`` prefix, int64 ``*metrics*``
      counters), GPT-2-trained (50277 / 16 → 50288 rows);
    * ``hf_format=True``: a transformers ``-hf`` folder (config.json model_type mamba + model.safetensors +
      the GPT-NeoX tokenizer files).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_config(hazy=hazy, **overrides)
    spec = parse_config(config)
    weights = random_mamba_weights(spec, seed)
    if hf_format:
        from transformers import MambaForCausalLM

        from jrt_eval.tokenization import load_tokenizer

        with torch.device("meta"):
            hf = MambaForCausalLM(hf_config(spec))
        sd = dict(weights)
        resolve_tied_head(sd, "backbone.embeddings.weight", "lm_head.weight", spec.tie, "tiny")
        hf.load_state_dict(sd, strict=True, assign=True)
        if spec.tie:
            hf.lm_head.weight = hf.backbone.embeddings.weight
        hf.save_pretrained(out)
        load_tokenizer("EleutherAI/gpt-neox-20b").save_pretrained(out)
        return out
    save_mamba_ssm_checkpoint(out, config, weights, spec.tie, hazy)
    return out
