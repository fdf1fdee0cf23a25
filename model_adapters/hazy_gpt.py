"""hazyresearch GPT-backbone checkpoints: Based, JRT-RNN (prefix linear attention) and the attention baseline.

    model = load_model("hazyresearch/based-360m")          # or a local folder
    logits = model(input_ids, attention_mask)              # [B, T, V] float32
    last, cache = model.prefill(input_ids, attention_mask) # then model.step(next_ids, cache)

The published format (reference-models.md §1.1): ``config.json`` is a serialised ``GPT2Config`` plus
Hydra mixer dicts (``mixer`` / ``alt_mixer`` / ``alt_mixer_2`` with ``_target_`` class paths and
constructor kwargs), ``pytorch_model.bin`` an fp32 state dict whose keys may carry a leading
``model.`` and ``*metrics*`` counters. Every width and layer choice is read from config.json and
checked against the tensor shapes; contradictions and variants we do not implement raise
:class:`CheckpointError` with the offending names. Values that config.json does not carry but REF's
code fixes are collected in :data:`REF` below.

Layers live in ``hazy_layers.py``, the decode state in ``hazy_cache.py``; the interface (left padding, masks,
cache) is ``base.py``'s. Decode steps can be replayed as CUDA graphs on CUDA (``load_model(...,
cuda_graphs=True)``, the default; ssm_common's machinery; see HazyGPT).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import positions_from_mask
from .hazy_cache import HazyCache, _state_tensors, _state_view, _with_columns
from .hazy_layers import (
    Attention, BaseConv, GatedMLP, LinearAttention, PrefixLinearAttention, RMSNorm, SeqContext, StepContext,
    rope_inv_freq,
)
from .hub import CheckpointError, check_keys, checkpoint_dir, override_config, read_config, read_state_dict
from .ssm_common import RecurrentLM, _export, _StepGraph

log = logging.getLogger("jrt_eval")

FAMILIES = ("based", "jrt_rnn", "attn")


@dataclass(frozen=True)
class RefConventions:
    """What REF's code fixes but config.json does not say (the only hard-coded model values).

    REF = HazyResearch/prefix-linear-attention (train/src/models/gpt.py, based/models/mixers/*) and, for
    the attention baseline, based/models/transformer/gpt.py; section numbers are reference-models.md's.
    """
    linear_attn_eps: float = 1e-12  # §2.4/§3.2: LinearAttention / PrefixLinearAttention default ``eps``
    #   (a mixer dict may override it with an ``eps`` kwarg; fla_parallel prefill used 1e-6, ~1e-6 rel.)
    swiglu_gate_second_half: bool = True  # §1.2: fc1 -> [y | gate], fc2(y * silu(gate)); fixed in GatedMLP
    swa_window_divisor: int = 2  # §2.5: SlidingAttention passes flash-attn window (window_size // 2, 0)
    swa_window_default: int = 128  # SlidingAttention(window_size=128) constructor default
    swa_window_4096_layers: tuple = (7, 17)  # SlidingAttention: window_size 4096 on layers 7, 17 -> 256
    rotary_base_default: float = 10000.0  # sliding_window_additions / create_mha_cls ``rotary_emb_base``
    rotary_fraction_default: float = 0.0  # getattr(config, "rotary_emb_fraction", 0.0)
    proj_bias_default: bool = True  # getattr(config, "qkv_proj_bias" / "out_proj_bias", True)
    mlp_bias_default: bool = True  # getattr(config, "mlp_fc1_bias" / "mlp_fc2_bias", True)
    mlp_multiple_of: dict = field(default_factory=lambda: {"based": (256,), "jrt_rnn": (256,), "attn": (256, 128)})
    #   §1.2: GatedMlp rounds n_inner (or int(8d/3)) up to 256; the attention loader retries with 128
    conv_kernel_default: int = 3  # BaseConv(kernel_size=3); the yaml's ``kernel_sizes`` is ignored (§2.3)
    conv_expand_default: int = 2  # BaseConv(expand_proj=2); released configs say 4
    conv_bias_default: bool = True  # BaseConv(use_bias=True) for in_proj and out_proj
    la_num_heads_default: int = 16  # LinearAttention(num_heads=16)
    la_feature_dim_default: int = 16  # LinearAttention(feature_dim=16)
    pad_vocab_multiple_default: int = 1  # getattr(config, "pad_vocab_size_multiple", 1)
    layer_norm_eps_default: float = 1e-5  # GPT2Config default layer_norm_epsilon
    max_length: int = 2048  # §0: REF harness max_length for every hazyresearch model


REF = RefConventions()

_CONV = ("BaseConv", "BaseConvWithSiLU4")
_LA = ("LinearAttention",)
_PLA = ("PrefixLinearAttention",)
_SWA = ("SlidingAttention", "SlidingsMHA")
_MHA = ("MHA",)


# ===================================================================================== config
def _mixer_kind(value) -> str:
    """conv / la / pla / swa / mha for a Hydra mixer dict (None -> REF's fallback, full MHA)."""
    if value is None:
        return "mha"
    if not isinstance(value, dict) or not isinstance(value.get("_target_"), str):
        raise CheckpointError(f"mixer entry {value!r} is not a Hydra dict with a '_target_' class path")
    cls = value["_target_"].rsplit(".", 1)[-1]
    for kind, names in (("conv", _CONV), ("pla", _PLA), ("la", _LA), ("swa", _SWA), ("mha", _MHA)):
        if cls in names:
            return kind
    raise CheckpointError(f"unsupported mixer class {value['_target_']!r} (known: "
                          f"{', '.join(_CONV + _LA + _PLA + _SWA + _MHA)})")


def _layer_sources(config: dict) -> list:
    """(tag, mixer dict or None) per layer, REF ``create_mixer_cls``: alt_mixer_2_layers win over
    alt_mixer_layers, the rest use ``mixer``; a missing dict means full MHA (§2.1)."""
    n_layer = _int(config, "n_layer", aliases=("num_hidden_layers",))
    alt, alt2 = config.get("alt_mixer_layers") or [], config.get("alt_mixer_2_layers") or []
    for name, lst in (("alt_mixer_layers", alt), ("alt_mixer_2_layers", alt2)):
        if not isinstance(lst, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in lst):
            raise CheckpointError(f"config.json: {name} must be a list of layer indices, got {lst!r}")
        bad = [i for i in lst if not 0 <= i < n_layer]
        if bad:
            raise CheckpointError(f"config.json: {name} names layers {bad} outside 0..{n_layer - 1} (n_layer {n_layer})")
    out = []
    for i in range(n_layer):
        if i in alt2:
            out.append(("alt_mixer_2", config.get("alt_mixer_2")))
        elif i in alt:
            out.append(("alt_mixer", config.get("alt_mixer")))
        else:
            out.append(("mixer", config.get("mixer")))
    return out


def family_of(config: dict) -> str:
    """'based' / 'jrt_rnn' / 'attn' for a hazyresearch GPT config.json; CheckpointError saying why not."""
    if not isinstance(config, dict):
        raise CheckpointError(f"config.json must hold a JSON object, got {type(config).__name__}")
    if "d_model" in config or "ssm_cfg" in config or config.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError("config.json is not a hazyresearch GPT config (Based / JRT-RNN / attention): "
                              f"model_type {config.get('model_type')!r}, mamba_ssm keys {'d_model' in config}")
    if "n_embd" not in config and "hidden_size" not in config:
        raise CheckpointError("config.json: required key 'n_embd' is missing (not a GPT2Config?)")
    kinds = {_mixer_kind(v) for _, v in _layer_sources(config)}
    if "pla" in kinds:
        return "jrt_rnn"
    if kinds & {"la", "conv", "swa"}:
        return "based"
    if config.get("rms_norm") is True:  # pure MHA: the hazy baseline (a stock GPT-2 config has no rms_norm)
        return "attn"
    raise CheckpointError("config.json is a plain GPT-2 config (no hazy mixers, no rms_norm), not a "
                          "hazyresearch Based / JRT-RNN / attention checkpoint")


def detect_family(config: dict) -> Optional[str]:
    """'based' / 'jrt_rnn' / 'attn' for a hazyresearch GPT config.json, else None (never raises)."""
    try:
        return family_of(config)
    except (CheckpointError, TypeError, ValueError, AttributeError):
        return None


def _int(config: dict, key: str, where: str = "config.json", aliases=(), default=None) -> int:
    for k in (key,) + tuple(aliases):
        if k in config and config[k] is not None:
            value = config[k]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise CheckpointError(f"{where}: {k} must be an integer, got {value!r}")
            return int(value)
    if default is not None:
        return default
    raise CheckpointError(f"{where}: required key {key!r} is missing")


def _num(config: dict, key: str, default: float, where: str = "config.json") -> float:
    value = config.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def _bool(config: dict, key: str, default: bool, where: str = "config.json") -> bool:
    value = config.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CheckpointError(f"{where}: {key} must be true/false, got {value!r}")
    return value


@dataclass
class LayerSpec:
    kind: str  # conv | la | pla | swa | mha
    args: dict  # constructor arguments of the hazy_layers class (widths from config.json)


@dataclass
class HazySpec:
    """Everything the model is built from, parsed and checked from config.json."""
    family: str
    d: int
    n_layer: int
    n_head: int
    vocab_size: int
    vocab_rows: int
    norm_eps: float
    residual_in_fp32: bool
    tie_embeddings: bool
    n_positions: int  # > 0: learned absolute position embeddings (GPT2Embeddings)
    embed_multiplier: float
    mlp_hidden_candidates: tuple  # MLP widths REF could have built; the weights pick one
    mlp_bias: tuple
    layers: list

    def kinds(self) -> list:
        return [layer.kind for layer in self.layers]


_REQUIRED_FLAGS = {  # key: (REF default when absent, the only value we implement)
    "rms_norm": (False, True), "parallel_block": (False, False), "prenorm": (True, True),
    "word_embed_proj_dim": (None, None), "lm_head_bias": (False, False), "rotary_emb_interleaved": (False, False),
    "rotary_emb_scale_base": (None, None), "n_head_kv": (None, None), "num_head_kv": (None, None),
    "mlp_type": ("base", "base"), "activation_function": ("gelu_new", "swiglu"),
}


def parse_config(config: dict, family: Optional[str] = None) -> HazySpec:
    family = family or family_of(config)
    if family not in FAMILIES:
        raise ValueError(f"unknown hazy family {family!r}; known: {', '.join(FAMILIES)}")
    for key, (default, want) in _REQUIRED_FLAGS.items():
        got = config.get(key, default)
        if got != want:
            raise CheckpointError(f"config.json: {key}={got!r} is not supported (the hazyresearch checkpoints "
                                  f"use {want!r})")
    if config.get("fixed_decay"):
        log.warning("config.json sets fixed_decay: the decay buffer is ignored, as in training "
                    "(REF applies it only with use_decay_proj; see reference-models.md §2.6)")

    d = _int(config, "n_embd", aliases=("hidden_size",))
    n_layer = _int(config, "n_layer", aliases=("num_hidden_layers",))
    n_head = _int(config, "n_head", aliases=("num_attention_heads",))
    vocab = _int(config, "vocab_size")
    multiple = _int(config, "pad_vocab_size_multiple", default=REF.pad_vocab_multiple_default)
    if min(d, n_layer, n_head, vocab, multiple) <= 0:
        raise CheckpointError("config.json: n_embd, n_layer, n_head, vocab_size, pad_vocab_size_multiple must be > 0")
    if d % n_head:
        raise CheckpointError(f"config.json: n_embd {d} is not divisible by n_head {n_head}")
    head_dim = d // n_head
    if config.get("head_dim") not in (None, head_dim):
        raise CheckpointError(f"config.json: head_dim {config['head_dim']} != n_embd / n_head = {head_dim} "
                              "(REF's attention layers would disagree with each other)")
    n_positions = _int(config, "n_positions", aliases=("max_position_embeddings",), default=0)

    softmax_scale = head_dim ** -0.5 if _bool(config, "scale_attn_weights", True) else 1.0
    rotary_dim = int(_num(config, "rotary_emb_fraction", REF.rotary_fraction_default) * head_dim)
    if rotary_dim and 2 * math.ceil(rotary_dim / 2) > head_dim:
        raise CheckpointError(f"config.json: rotary dim {rotary_dim} rotates {2 * math.ceil(rotary_dim / 2)} "
                              f"channels, more than the head dim {head_dim}")
    attn_common = dict(
        d=d, num_heads=n_head, head_dim=head_dim, rotary_dim=rotary_dim,
        rotary_base=_num(config, "rotary_emb_base", REF.rotary_base_default),
        qkv_bias=_bool(config, "qkv_proj_bias", REF.proj_bias_default),
        out_bias=_bool(config, "out_proj_bias", REF.proj_bias_default),
    )
    by_inverse_layer = _bool(config, "scale_attn_by_inverse_layer_idx", False)

    top_enc = _resolved(config.get("enc_length"))
    layers = []
    for i, (tag, mixer) in enumerate(_layer_sources(config)):
        kind = _mixer_kind(mixer)
        where = f"config.json {tag} (layer {i})"
        m = mixer or {}
        scale = softmax_scale / (i + 1) if by_inverse_layer else softmax_scale
        if kind in ("swa", "mha"):
            window = None
            if kind == "swa":
                if m.get("num_heads") not in (None, n_head):
                    raise CheckpointError(f"{where}: num_heads {m['num_heads']} contradicts n_head {n_head} "
                                          "(REF overrides it with n_head)")
                if m.get("num_heads_kv") not in (None, n_head):
                    raise CheckpointError(f"{where}: num_heads_kv (GQA) is not supported")
                w = _int(m, "window_size", where, default=REF.swa_window_default)
                if w == 4096 and i in REF.swa_window_4096_layers:
                    w = 256
                window = w // REF.swa_window_divisor
            layers.append(LayerSpec(kind, dict(attn_common, softmax_scale=scale, window=window)))
        elif kind == "conv":
            expand = _int(m, "expand_proj", where, default=REF.conv_expand_default)
            if (expand * d) % 2:
                raise CheckpointError(f"{where}: expand_proj {expand} x n_embd {d} is odd")
            layers.append(LayerSpec(kind, dict(
                d=d, d_inner=expand * d // 2, kernel=_int(m, "kernel_size", where, default=REF.conv_kernel_default),
                bias=_bool(m, "use_bias", REF.conv_bias_default, where),
                conv_bias=_bool(m, "use_cuda", False, where))))  # REF ShortConvolution: use_cuda -> conv bias
        else:  # la / pla
            if m.get("use_decay_proj"):
                raise CheckpointError(f"{where}: unsupported Based variant (use_decay_proj / decay, "
                                      "reference-models.md §2.6): REF's parallel and recurrent forms disagree")
            impl = m.get("parallel_implementation", m.get("implementation"))
            if impl == "tk":
                raise CheckpointError(f"{where}: the ThunderKittens variant ('tk', with an output norm) is not supported")
            H = _int(m, "num_heads", where, default=REF.la_num_heads_default if kind == "la" else None)
            f = _int(m, "feature_dim", where, default=REF.la_feature_dim_default)
            dv = _int(m, "head_dim", where, default=0) or (d // H)
            if kind == "pla" and m.get("head_dim") not in (None, d // H):
                raise CheckpointError(f"{where}: PrefixLinearAttention has no head_dim argument")
            if H <= 0 or f <= 0 or (d % H and "head_dim" not in m):
                raise CheckpointError(f"{where}: num_heads {H} / feature_dim {f} do not fit n_embd {d}")
            scale_dim = _feature_map_scale_dim(m, f, where, kind)
            args = dict(d=d, num_heads=H, feature_dim=f, head_dim=dv,
                        eps=_num(m, "eps", REF.linear_attn_eps, where), qk_scale=(f / scale_dim) ** 0.25)
            if kind == "pla":
                enc = _resolved(m.get("enc_length"))
                if enc is None and top_enc is not None:
                    log.warning("%s has no enc_length; using the top-level enc_length %s", where, top_enc)
                    enc = top_enc
                if enc is None:
                    raise CheckpointError(f"{where}: PrefixLinearAttention needs enc_length (none in config.json)")
                if top_enc is not None and top_enc != enc:
                    raise CheckpointError(f"{where}: enc_length {enc} contradicts the top-level enc_length {top_enc}")
                args["enc_length"] = _int({"enc_length": enc}, "enc_length", where)
                if args["enc_length"] < 0:
                    raise CheckpointError(f"{where}: enc_length must be >= 0")
            layers.append(LayerSpec(kind, args))

    n_inner = config.get("n_inner")
    base_width = _int(config, "n_inner") if n_inner is not None else int(8 * d / 3)
    candidates = tuple(dict.fromkeys(-(-base_width // k) * k for k in REF.mlp_multiple_of[family]))
    return HazySpec(
        family=family, d=d, n_layer=n_layer, n_head=n_head, vocab_size=vocab,
        vocab_rows=-(-vocab // multiple) * multiple,
        norm_eps=_num(config, "layer_norm_epsilon", REF.layer_norm_eps_default),
        residual_in_fp32=_bool(config, "residual_in_fp32", False),
        tie_embeddings=_bool(config, "tie_word_embeddings", True),
        n_positions=n_positions,
        embed_multiplier=_num(config, "mup_embeddings_multiplier", 1.0) if family == "attn" else 1.0,
        mlp_hidden_candidates=candidates,
        mlp_bias=(_bool(config, "mlp_fc1_bias", REF.mlp_bias_default), _bool(config, "mlp_fc2_bias", REF.mlp_bias_default)),
        layers=layers,
    )


def _resolved(value):
    """None for an unresolved Hydra interpolation string such as "${..enc_length}"."""
    return None if isinstance(value, str) and value.startswith("${") else value


def _feature_map_scale_dim(m: dict, f: int, where: str, kind: str) -> int:
    """REF TaylorExp scales by sqrt(input_dim) (LinearAttention: feature_map.input_dim; PLA: scale_dim)."""
    if kind == "pla":
        return _int(m, "scale_dim", where, default=f)
    fm = m.get("feature_map")
    if fm is None:
        return f
    if not isinstance(fm, dict) or str(fm.get("_target_", "")).rsplit(".", 1)[-1] != "TaylorExp":
        raise CheckpointError(f"{where}: feature_map {fm!r} is not supported (only TaylorExp)")
    dim = _resolved(fm.get("input_dim", f))
    if dim is None:  # "${..feature_dim}"
        return f
    return _int({"input_dim": dim}, "input_dim", where)


# ===================================================================================== model
class Block(nn.Module):
    def __init__(self, spec: HazySpec, layer: LayerSpec, mlp_hidden: int, double_add_kv: bool):
        super().__init__()
        self.norm1 = RMSNorm(spec.d, spec.norm_eps)
        a = dict(layer.args)
        if layer.kind == "conv":
            self.mixer = BaseConv(**a)
        elif layer.kind == "la":
            self.mixer = LinearAttention(**a, double_add_kv=double_add_kv)
        elif layer.kind == "pla":
            self.mixer = PrefixLinearAttention(**a)
        else:
            self.mixer = Attention(**a)
        self.norm2 = RMSNorm(spec.d, spec.norm_eps)
        self.mlp = GatedMLP(spec.d, mlp_hidden, *spec.mlp_bias)


class HazyGPT(RecurrentLM):
    """GPTLMHeadModel of REF (pre-norm blocks, RMSNorm, swapped SwiGLU MLP, tied head) with our mixers.

    Decode (``step``) runs ``_step_core``, which is CUDA-graph safe: no host synchronisation, states and
    positions updated in place, full attention written at a device-side column into buffers with room reserved
    on the host side. ``cuda_graphs`` (ssm_common.RecurrentLM): True = replay the step as a CUDA graph on CUDA
    (the default), "static" = the same static-buffer bookkeeping without capture (any device; tests), False = eager.
    Graphs are keyed by batch size, full-attention capacity (a multiple of ``KV_BUCKET``), state dtypes, autocast
    state and kernel choice; Based / JRT-RNN states do not depend on the prompt, so their graphs serve every batch.
    """

    MAX_KV_GRAPHS = 2  # graphs holding full-attention KV buffers (batch x capacity x layers: gigabytes at 360M)
    KV_BUCKET = 128

    def __init__(self, spec: HazySpec, mlp_hidden: list, conv_kernel: dict, config: Optional[dict] = None,
                 reference_quirks: bool = False):
        super().__init__()
        self.spec, self.family = spec, spec.family
        self.config = dict(config or {})
        self.vocab_rows = spec.vocab_rows
        self.max_length = REF.max_length
        self.reference_quirks = bool(reference_quirks)
        self.kinds = tuple(spec.kinds())
        layers = [LayerSpec(l.kind, dict(l.args, kernel=conv_kernel.get(i, l.args.get("kernel"))) if l.kind == "conv"
                            else l.args) for i, l in enumerate(spec.layers)]
        self.transformer = nn.Module()
        self.transformer.embeddings = nn.Module()
        self.transformer.embeddings.word_embeddings = nn.Embedding(spec.vocab_rows, spec.d)
        if spec.n_positions > 0:
            self.transformer.embeddings.position_embeddings = nn.Embedding(spec.n_positions, spec.d)
        self.transformer.layers = nn.ModuleList(
            Block(spec, layer, mlp_hidden[i], self.reference_quirks) for i, layer in enumerate(layers))
        self.transformer.ln_f = RMSNorm(spec.d, spec.norm_eps)
        if not spec.tie_embeddings:
            self.lm_head = nn.Linear(spec.d, spec.vocab_rows, bias=False)

    # ------------------------------------------------------------------ pieces
    @property
    def head_weight(self) -> torch.Tensor:
        return self.transformer.embeddings.word_embeddings.weight if self.spec.tie_embeddings else self.lm_head.weight

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor, check: bool = True) -> torch.Tensor:
        """``check=False`` (decode): the caller checked the live rows' positions on the host; positions are clamped
        so that rows that left a graph's batch (still stepped there, results unused) never index past the table."""
        emb = self.transformer.embeddings
        x = emb.word_embeddings(ids)
        if self.spec.n_positions > 0:
            if check and int(positions.max()) >= self.spec.n_positions:
                raise ValueError(f"position {int(positions.max())} exceeds the checkpoint's "
                                 f"{self.spec.n_positions} learned positions")
            if not check:
                positions = positions.clamp(max=self.spec.n_positions - 1)
            x = x + emb.position_embeddings(positions)
        if self.spec.embed_multiplier != 1.0:
            x = x * self.spec.embed_multiplier
        return x.float() if self.spec.residual_in_fp32 else x

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transformer.ln_f(h), self.head_weight).float()

    @staticmethod
    def _mask(attention_mask: Optional[torch.Tensor], input_ids: torch.Tensor) -> Optional[torch.Tensor]:
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be [B, T] with T >= 1, got {tuple(input_ids.shape)}")
        if attention_mask is None:
            return None
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} != input_ids {tuple(input_ids.shape)}")
        mask = attention_mask.to(device=input_ids.device).bool()
        if bool((mask[:, 1:] < mask[:, :-1]).any()):
            raise ValueError("attention_mask must describe LEFT padding (zeros, then ones) in every row")
        return None if bool(mask.all()) else mask

    def _run(self, input_ids, attention_mask, want_state: bool, encoder_lengths=None):
        B, T = input_ids.shape
        mask = self._mask(attention_mask, input_ids)
        positions = positions_from_mask(mask, B, T, input_ids.device)
        limit = None if encoder_lengths is None else torch.as_tensor(encoder_lengths, device=input_ids.device).long()
        ctx = SeqContext(mask, positions, want_state, limit)
        r = self._embed(input_ids, positions)
        states = []
        for block in self.transformer.layers:
            y, state = block.mixer(block.norm1(r), ctx)
            r = r + y.to(r.dtype)
            r = r + block.mlp(block.norm2(r)).to(r.dtype)
            states.append(state)
        next_pos = positions[:, -1] + 1 if mask is None else mask.sum(-1)
        return r, states, next_pos

    # ------------------------------------------------------------------ interface (base.py)
    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                encoder_lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits [B, T, V] (float32). ``encoder_lengths [B]``: JRT-RNN's encoder reads at most this many
        real tokens per row (loglikelihood: the context only); default min(enc_length, real length)."""
        r, _, _ = self._run(input_ids, attention_mask, False, encoder_lengths)
        return self._logits(r)

    # prefill / step run under inference mode (cache tensors are updated in place; select works in inference
    # mode); logits handed to a caller outside inference mode are cloned into ordinary tensors.
    def prefill(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                encoder_lengths: Optional[torch.Tensor] = None):
        with torch.inference_mode():
            r, states, next_pos = self._run(input_ids, attention_mask, True, encoder_lengths)
            logits = self._logits(r[:, -1])
            max_position = int(next_pos.max()) if self.spec.n_positions > 0 else None  # prefill syncs anyway
            cache = HazyCache([_state_tensors(st) for st in states], next_pos.long(), input_ids.shape[1],
                              tuple(i for i, kind in enumerate(self.kinds) if kind == "mha"), max_position)
        return _export(logits), cache

    def step(self, input_ids: torch.Tensor, cache: HazyCache) -> torch.Tensor:
        with torch.inference_mode():
            logits = self._step(input_ids.reshape(-1).to(self.head_weight.device), cache)
        return _export(logits)

    # ------------------------------------------------------------------ decode
    def _step_core(self, ids: torch.Tensor, layers: list, kv_len: Optional[int] = None) -> torch.Tensor:
        """One token per row over ``layers`` (HazyCache.layers), updated in place; no host synchronisation.
        ``kv_len`` (eager only): filled full-attention columns after this step's write."""
        extra = layers[-1]
        positions, column = extra["positions"], extra["column"]
        ctx = StepContext(positions, column=column, kv_len=kv_len)
        r = self._embed(ids, positions, check=False)
        for block, kind, state in zip(self.transformer.layers, self.kinds, layers):
            r = r + block.mixer.step(block.norm1(r), _state_view(kind, state), ctx).to(r.dtype)
            r = r + block.mlp(block.norm2(r)).to(r.dtype)
        positions.add_(1)
        column.add_(1)
        return self._logits(r)

    def _step(self, ids: torch.Tensor, cache: HazyCache) -> torch.Tensor:
        cache.check_position(self.spec.n_positions)  # host side: nothing in the step reads the device
        logits = super()._step(ids, cache)  # graphed (RecurrentLM) or _eager_step
        cache.advance()
        return logits

    def _graph_fits(self, cache: HazyCache) -> bool:
        """The bound graph's full-attention buffers have a column for the next token."""
        return not cache.kv_layers or cache.capacity > cache.filled

    def _eager_step(self, ids: torch.Tensor, cache: HazyCache) -> torch.Tensor:
        need = cache.filled + 1  # full-attention columns after this step
        if cache.kv_layers and cache.capacity < need:
            cache.grow(self._kv_capacity_for(cache))
        return self._step_core(ids, cache.layers, need if cache.kv_layers else None)

    def _kv_capacity_for(self, cache: HazyCache) -> int:
        """Full-attention columns to allocate: the next step's, or the reserved ones, rounded up to ``KV_BUCKET``."""
        columns = max(cache.target, cache.filled + 1)
        return -(-columns // self.KV_BUCKET) * self.KV_BUCKET

    def _graph_key(self, cache: HazyCache, auto: tuple, capacity: int) -> tuple:
        batch = next(iter(cache.layers[0].values())).shape[0]
        dtypes = tuple(v.dtype for layer in cache.layers for v in layer.values())
        # JRT_EVAL_KERNELS picks fused or reference kernels at capture time (benchmarks switch it at run time)
        return (batch, capacity, auto, dtypes, self.head_weight.device, os.environ.get("JRT_EVAL_KERNELS", "auto"))

    def _graph_for(self, cache: HazyCache, auto: tuple) -> Optional[_StepGraph]:
        """The graph for an unbound cache (least recently used ones evicted past ``MAX_GRAPHS`` / ``MAX_KV_GRAPHS``).

        Full attention: room for the reserved steps rounded up to ``KV_BUCKET`` columns, or a cached graph with a
        little more room (up to a quarter more, at least one bucket: attending over masked columns costs that
        much, a new capture and its buffers cost more); the cache's unfilled columns past that are dropped, and
        bind pads it to the graph's capacity."""
        capacity = 0
        if cache.kv_layers:
            want = self._kv_capacity_for(cache)
            fits = [key[1] for key in self._graphs
                    if want <= key[1] <= want + max(self.KV_BUCKET, want // 4)
                    and key == self._graph_key(cache, auto, key[1])]
            capacity = min(fits, default=want)
            if cache.capacity > capacity:
                cache.grow(capacity)  # drops unfilled columns only (capacity > filled); bind pads the others
        key = self._graph_key(cache, auto, capacity)
        graph = self._graphs.pop(key, None)
        if graph is None:
            while True:  # evict the least recently used graph (one with KV buffers when those are too many)
                kv_keys = [k for k in self._graphs if k[1]]
                if capacity and len(kv_keys) >= self.MAX_KV_GRAPHS:
                    victim = kv_keys[0]
                elif len(self._graphs) >= self.MAX_GRAPHS:
                    victim = next(iter(self._graphs))
                else:
                    break
                self._graphs.pop(victim).release()
            static = list(cache.layers)  # templates of the static buffers (_StepGraph allocates them zeroed)
            for i in cache.kv_layers:  # full attention: ``capacity`` columns (bind copies the filled ones)
                static[i] = {k: _with_columns(v, 1 if k == "valid" else 2, capacity) for k, v in static[i].items()}
            graph = self._new_graph(static, key[0], key[4], auto)
            if graph is None:
                return None
        self._graphs[key] = graph  # most recently used last
        return graph


# ===================================================================================== loading
def _mlp_width(spec: HazySpec, sd: dict, i: int) -> int:
    w = sd.get(f"transformer.layers.{i}.mlp.fc2.weight")
    if w is None or w.dim() != 2:
        return spec.mlp_hidden_candidates[0]  # the key check reports it
    m = int(w.shape[1])
    if m not in spec.mlp_hidden_candidates:
        raise CheckpointError(
            f"transformer.layers.{i}.mlp.fc2.weight has MLP width {m}, but config.json's n_inner (or 8·n_embd/3 "
            f"when unset, rounded as REF's GatedMlp) gives {' or '.join(map(str, spec.mlp_hidden_candidates))}")
    return m


def _conv_kernel(spec: HazySpec, sd: dict, i: int) -> Optional[int]:
    w = sd.get(f"transformer.layers.{i}.mixer.conv.conv.weight")
    if w is None or w.dim() != 3:
        return None
    k = int(w.shape[-1])
    if k != spec.layers[i].args["kernel"]:
        raise CheckpointError(f"transformer.layers.{i}.mixer.conv.conv.weight has kernel size {k}, "
                              f"config.json gives {spec.layers[i].args['kernel']} (REF BaseConv kernel_size)")
    return k


def normalize_state_dict(sd: dict, spec: HazySpec) -> dict:
    """REF's loader steps (§1.1): strip a leading ``model.``, drop ``*metrics*``, rename ``conv1`` -> ``conv``,
    drop RoPE ``inv_freq`` buffers (checked), fold ``lm_head.weight`` into the tied embedding."""
    out = {}
    for key, value in sd.items():
        name = re.sub(r"^model\.", "", key)
        if "metrics" in name:
            continue
        name = name.replace("conv1", "conv")
        if name in out:
            raise CheckpointError(f"weights hold both {key!r} and another key that maps to {name!r}")
        out[name] = value
    for name in [k for k in out if k.endswith("rotary_emb.inv_freq")]:
        layer = re.match(r"transformer\.layers\.(\d+)\.mixer\.rotary_emb\.inv_freq$", name)
        args = spec.layers[int(layer.group(1))].args if layer and int(layer.group(1)) < spec.n_layer else {}
        if not args.get("rotary_dim"):
            continue  # left for the key check (unexpected)
        want = rope_inv_freq(args["rotary_dim"], args["rotary_base"])
        got = out.pop(name)
        if got.shape != want.shape or not torch.allclose(got.float(), want, rtol=1e-4, atol=0):
            raise CheckpointError(f"{name} does not match rotary_emb_fraction / rotary_emb_base of config.json")
    if spec.tie_embeddings and "lm_head.weight" in out:
        head, emb_key = out.pop("lm_head.weight"), "transformer.embeddings.word_embeddings.weight"
        if emb_key not in out:
            out[emb_key] = head
        elif out[emb_key].shape != head.shape or not torch.equal(out[emb_key], head):
            raise CheckpointError("lm_head.weight differs from transformer.embeddings.word_embeddings.weight, "
                                  "but config.json ties them (tie_word_embeddings)")
    return out


def build_model(spec: HazySpec, sd: Optional[dict] = None, config: Optional[dict] = None,
                reference_quirks: bool = False, device=None) -> HazyGPT:
    """A model shaped by ``spec``; MLP width and conv kernel come from ``sd`` when given (checked)."""
    sd = sd or {}
    mlp_hidden = [_mlp_width(spec, sd, i) for i in range(spec.n_layer)]
    kernels = {i: k for i in range(spec.n_layer) if spec.layers[i].kind == "conv"
               for k in [_conv_kernel(spec, sd, i)] if k is not None}
    with torch.device(device or "cpu"):
        return HazyGPT(spec, mlp_hidden, kernels, config, reference_quirks)


def load_model(pretrained: str, *, device="cpu", dtype: torch.dtype = torch.float32,
               reference_quirks: bool = False, cuda_graphs=True) -> HazyGPT:
    """Load a hazyresearch Based / JRT-RNN / attention checkpoint (hub id or local folder), strictly.

    ``cuda_graphs``: True (decode steps replayed as CUDA graphs on CUDA), "static" (the same bookkeeping without
    capture, any device) or False (eager decode). Default True: on an H100 (benchmarks/gpu_check_hazy.py,
    2026-11-23) the graphed step gave the eager step's tokens on every row and logits within 6.4e-7, and
    generated 2.3-3.1x faster (batch 32, 950/1900-token prompts, 48 tokens)."""
    if cuda_graphs not in (True, False, "static"):
        raise ValueError(f"cuda_graphs must be true, false or 'static', got {cuda_graphs!r}")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""))
    folder = checkpoint_dir(pretrained)
    config = read_config(folder)
    spec = parse_config(config, family_of(config))
    sd = normalize_state_dict(read_state_dict(folder), spec)
    decay_key = "transformer.decay.decay"
    if config.get("fixed_decay"):
        if decay_key not in sd:
            raise CheckpointError(f"{folder}: config.json sets fixed_decay but the weights lack {decay_key}")
        sd.pop(decay_key)
    model = build_model(spec, sd, config, reference_quirks, device="meta")
    expected = model.state_dict()
    check_keys(set(expected), set(sd), str(folder))
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if tuple(sd[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{folder}: tensor shapes do not match config.json: " + "; ".join(wrong[:8])
                              + (f" … (+{len(wrong) - 8})" if len(wrong) > 8 else ""))
    bad_dtype = [k for k, v in sd.items() if not v.is_floating_point()]
    if bad_dtype:
        raise CheckpointError(f"{folder}: non-float weights {bad_dtype[:8]}")
    model.load_state_dict(sd, strict=True, assign=True)
    model.cuda_graphs = cuda_graphs
    return model.to(device=device, dtype=dtype).eval()


# ===================================================================================== tiny checkpoints
_GPT2_DEFAULTS = {  # what a serialised transformers.GPT2Config carries (hub configs, §1.1)
    "activation_function": "swiglu", "architectures": None, "attn_pdrop": 0.0, "bos_token_id": 50256,
    "embd_pdrop": 0.0, "eos_token_id": 50256, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2", "n_positions": 0, "reorder_and_upcast_attn": False, "resid_pdrop": 0.0,
    "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True, "summary_activation": None,
    "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
    "summary_use_proj": True, "tie_word_embeddings": True, "transformers_version": "4.36.2",
    "use_cache": True, "vocab_size": 50257,
}
_HAZY_EXTRAS = {  # the training yaml's extra keys (REF train/configs/experiment/baselines/*.yaml)
    "rms_norm": True, "fused_mlp": False, "mlp_fc1_bias": False, "mlp_fc2_bias": False, "fused_bias_fc": True,
    "out_proj_bias": False, "qkv_proj_bias": False, "use_flash_attn": True, "residual_in_fp32": True,
    "fused_dropout_add_ln": True, "special_initializer": True,
}


def tiny_config(family: str, **overrides) -> dict:
    """A small config.json of ``family`` in the published layout (d 64, 6 layers; attn 4 layers)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown hazy family {family!r}; known: {', '.join(FAMILIES)}")
    cfg = dict(_GPT2_DEFAULTS, **_HAZY_EXTRAS, n_embd=64, n_head=4, n_layer=6, n_inner=128,
               pad_vocab_size_multiple=8, rotary_emb_fraction=1)
    if family == "attn":
        cfg.update(n_layer=4, n_inner=None, pad_vocab_size_multiple=16, rotary_emb_fraction=0.5, ff_mult=4)
    else:
        cfg.update(
            alt_mixer_layers=[1, 4], alt_mixer_2_layers=[2, 5],  # C L S C L S: every mixer kind, twice
            mixer={"_target_": "based.models.mixers.convolution.BaseConv", "l_max": 2048, "use_bias": True,
                   "expand_proj": 4, "kernel_sizes": [3]},
            alt_mixer_2={"_target_": "based.models.mixers.slide_attention.SlidingAttention", "window_size": 8,
                         "num_heads": 4, "causal": True},
        )
        if family == "based":
            cfg["alt_mixer"] = {"_target_": "based.models.mixers.linear_attention.LinearAttention", "l_max": 2048,
                                "feature_map": {"_target_": "based.models.mixers.linear_attention.TaylorExp",
                                                "input_dim": 8},
                                "feature_dim": 8, "num_heads": 2, "parallel_implementation": "fla_parallel"}
        else:
            cfg.update(enc_length=16, dec_length=16, data_type="mixed")
            cfg["alt_mixer"] = {"_target_": "based.models.mixers.prefix_linear_attention.PrefixLinearAttention",
                                "l_max": 2048, "feature_dim": 8, "feature_name": "taylor_exp", "num_heads": 2,
                                "num_key_value_heads": 2, "enc_length": 16, "dec_length": 16,
                                "implementation": "fla_parallel", "use_mask": True}
    return override_config(cfg, overrides)


def random_weights(model: nn.Module, seed: int = 0) -> OrderedDict:
    """Deterministic random weights with O(1) activations in every layer."""
    gen = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for name, p in model.state_dict().items():
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.endswith("ln_f.weight"):
            t = 1 + 0.1 * torch.randn(p.shape, generator=gen)
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(p.shape, generator=gen)
        elif "embeddings" in name or name == "lm_head.weight":
            t = 0.25 * torch.randn(p.shape, generator=gen)  # logits ~N(0, 2²): clear greedy margins
        elif name.endswith("conv.conv.weight"):
            t = torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1])
        else:
            t = torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1])
            if name.endswith("out_proj.weight") or name.endswith("fc2.weight"):  # REF's residual-branch scaling
                t = t / math.sqrt(2 * len(model.transformer.layers))
        out[name] = t.to(torch.float32)
    return out


def write_tiny_checkpoint(out_dir, family: str, seed: int = 0, **overrides) -> Path:
    """Write a tiny random checkpoint in the published format: config.json (GPT2Config keys + Hydra mixer
    dicts) and pytorch_model.bin (``model.`` prefix, an int64 ``train_metrics`` counter, tied lm_head)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_config(family, **overrides)
    spec = parse_config(config, family)
    weights = random_weights(build_model(spec, None, config, device="meta"), seed)
    sd = OrderedDict((f"model.{k}", v) for k, v in weights.items())
    if spec.tie_embeddings:
        sd["model.lm_head.weight"] = weights["transformer.embeddings.word_embeddings.weight"]  # shared storage
    sd["model.train_metrics.num-tokens.count"] = torch.tensor(123456, dtype=torch.int64)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    torch.save(sd, out / "pytorch_model.bin")
    return out
