"""GLA (fla-hub/gla-1.3B-100B, gla-2.7B-100B): our own compact PyTorch model in fla 0.6.0's weight names,
behind the jrt-eval interface (base.py). fla itself cannot run on CPU (every op is Triton), so this module
is the CPU path; on CUDA the same model runs fla's ``chunk_gla`` / ``fused_recurrent_gla`` for the prefill
(when flash-linear-attention is installed; its per-chunk states replaced by our kernel that keeps the state on
chip), our Triton kernel for the forget gate over the prompt, and one Triton kernel per layer for the decode step
with its gate.

Format (reference-models.md §7.1): transformers-style folder, ``config.json`` with ``model_type: "gla"``,
``model.safetensors``, the Llama-2 SentencePiece tokenizer. Weights per layer ``model.layers.{i}.``:
``attn_norm``, ``attn.{q,k,v,g,o}_proj``, ``attn.gk_proj.{0,1}`` (low-rank forget gate, bias on the second),
``attn.g_norm_swish_gate`` (``attn.g_norm`` when fla's ``fuse_norm`` was off), ``mlp_norm``,
``mlp.{gate,up,down}_proj``; also the older fused ``mlp.gate_proj [2m, d]`` (first half gate, second half up)
without ``up_proj``, split on load. ``model.embeddings``, ``model.norm``, ``lm_head`` (untied).

Forward (§7.2): ``r ← r + GLA(RMSNorm(r))``, ``r ← r + MLP(RMSNorm(r))``; GLA per head with
``gk = logsigmoid(W_gk2 W_gk1 h + b) / 16``, ``S_t = diag(exp(gk_t)) S_{t-1} + k_t v_tᵀ``,
``o_t = (q_t K^{-1/2})ᵀ S_t``, then gated RMSNorm ``w ⊙ o / rms(o) ⊙ silu(g)`` per head and ``o_proj``;
MLP ``down(silu(gate h) ⊙ up h)``. RMSNorm ε = ``norm_eps`` (1e-6). The residual stream is kept in float32
(fla keeps it in the model dtype; this only changes rounding). Decode state per layer ``[B, H, K, V]`` float32.
Padding: pads get ``k = 0`` and ``gk = 0`` (no input, no decay), so left padding is exact.
"""
from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from jrt_eval.kernels.mamba import fla_usable, gated_rms_norm, gla_gate, gla_prefill, gla_step, silu_mul

from .hub import CheckpointError, checkpoint_dir, read_config, read_state_dict
from .ssm_common import RecurrentLM, cfg_bool, cfg_float, cfg_int, check_state_dict

log = logging.getLogger("jrt_eval")

GATE_LOGIT_NORMALIZER = 16  # fla GatedLinearAttention default; GLABlock never passes another value
NORM_EPS = 1e-6  # fla GLAConfig norm_eps default
# config keys whose non-default values we refuse by name (the released GLA checkpoints use the defaults)
_MUST_BE_FALSE = ("use_short_conv", "use_gv")
_MUST_BE_NONE = ("feature_map", "attn", "attnres_block_size")


@dataclass(frozen=True)
class GLASpec:
    hidden_size: int
    n_layer: int
    num_heads: int
    num_kv_heads: int
    key_dim: int
    value_dim: int
    vocab_size: int
    intermediate_size: int
    gate_low_rank_dim: int = 16
    eps: float = NORM_EPS
    clamp_min: Optional[float] = None
    use_output_gate: bool = True
    tie: bool = False

    @property
    def head_k(self) -> int:
        return self.key_dim // self.num_heads

    @property
    def head_v(self) -> int:
        return self.value_dim // self.num_heads

    @property
    def groups(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def vocab_rows(self) -> int:
        return self.vocab_size


def detect(config: dict) -> bool:
    return isinstance(config, dict) and config.get("model_type") == "gla"


def _default_intermediate(hidden: int, ratio) -> int:
    m = int(hidden * (4 if ratio is None else ratio) * 2 / 3)
    return 256 * ((m + 255) // 256)  # fla GatedMLP


def parse_config(config: dict, sd: Optional[dict] = None, where: str = "config.json") -> GLASpec:
    """Spec from config.json; widths the config leaves open (MLP width, gate rank) come from ``sd`` when given."""
    if not detect(config):
        raise CheckpointError(f"{where} is not a GLA config (model_type {config.get('model_type') if isinstance(config, dict) else None!r}, expected 'gla')")
    for key in _MUST_BE_FALSE:
        if config.get(key) not in (None, False):
            raise CheckpointError(f"{where}: {key}={config[key]!r} is not supported (released GLA checkpoints: false)")
    for key in _MUST_BE_NONE:
        if config.get(key) is not None:
            raise CheckpointError(f"{where}: {key}={config[key]!r} is not supported (released GLA checkpoints: null)")
    if not cfg_bool(config, "use_gk", True, where):
        raise CheckpointError(f"{where}: use_gk false (GLA without a forget gate) is not supported")
    if config.get("hidden_act", "swish") not in ("swish", "silu"):
        raise CheckpointError(f"{where}: hidden_act {config.get('hidden_act')!r} is not supported (GLA uses swish)")
    if not cfg_bool(config, "elementwise_affine", True, where):
        raise CheckpointError(f"{where}: elementwise_affine false is not supported")
    d = cfg_int(config, "hidden_size", 2048, where)
    heads = cfg_int(config, "num_heads", 4, where)
    kv_heads = config.get("num_kv_heads") or heads
    kv_heads = cfg_int({"num_kv_heads": kv_heads}, "num_kv_heads", where=where)
    ek, ev = cfg_float(config, "expand_k", 0.5, where), cfg_float(config, "expand_v", 1.0, where)
    key_dim, value_dim = round(d * ek), round(d * ev)
    if not math.isclose(d * ek, key_dim) or not math.isclose(d * ev, value_dim):
        raise CheckpointError(f"{where}: hidden_size × expand_k/expand_v must be integers ({d * ek}, {d * ev})")
    if heads % kv_heads or key_dim % heads or value_dim % heads:
        raise CheckpointError(f"{where}: {heads} heads / {kv_heads} kv heads do not divide key dim {key_dim} / "
                              f"value dim {value_dim}")
    inter = config.get("intermediate_size")
    inter = _default_intermediate(d, config.get("hidden_ratio", 4)) if inter is None else cfg_int(config, "intermediate_size", where=where)
    rank = 16
    if sd is not None:
        key = "model.layers.0.attn.gk_proj.0.weight"
        if key in sd:
            rank = int(sd[key].shape[0])
    eps = cfg_float(config, "norm_eps", NORM_EPS, where)
    if "rms_norm_eps" in config and "norm_eps" not in config and config["rms_norm_eps"] != eps:
        log.info("%s: fla reads norm_eps (default %g), not rms_norm_eps=%s", where, eps, config["rms_norm_eps"])
    clamp = config.get("clamp_min")
    return GLASpec(
        hidden_size=d, n_layer=cfg_int(config, "num_hidden_layers", 24, where), num_heads=heads, num_kv_heads=kv_heads,
        key_dim=key_dim, value_dim=value_dim, vocab_size=cfg_int(config, "vocab_size", 32000, where),
        intermediate_size=inter, gate_low_rank_dim=rank, eps=eps,
        clamp_min=None if clamp is None else cfg_float(config, "clamp_min", where=where),
        use_output_gate=cfg_bool(config, "use_output_gate", True, where),
        tie=cfg_bool(config, "tie_word_embeddings", False, where),
    )


class _Pack(NamedTuple):
    """Row blocks of one matrix (GLALM.pack_weights): the matrix, the Linear layers viewing it, their weights'
    addresses when packed (a replaced weight no longer matches) and their row counts."""
    weight: torch.Tensor
    mods: tuple
    ptrs: tuple
    sizes: list


# ===================================================================================== modules (fla names)
class _Norm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


class _Attention(nn.Module):
    def __init__(self, s: GLASpec):
        super().__init__()
        d, kv = s.hidden_size, s.num_kv_heads
        self.q_proj = nn.Linear(d, s.key_dim, bias=False)
        self.k_proj = nn.Linear(d, kv * s.head_k, bias=False)
        self.v_proj = nn.Linear(d, kv * s.head_v, bias=False)
        if s.use_output_gate:
            self.g_proj = nn.Linear(d, s.value_dim, bias=False)
        self.gk_proj = nn.Sequential(nn.Linear(d, s.gate_low_rank_dim, bias=False),
                                     nn.Linear(s.gate_low_rank_dim, kv * s.head_k, bias=True))
        self.o_proj = nn.Linear(s.value_dim, d, bias=False)
        self.g_norm_swish_gate = _Norm(s.head_v)


class _MLP(nn.Module):
    def __init__(self, s: GLASpec):
        super().__init__()
        self.gate_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=False)
        self.up_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=False)
        self.down_proj = nn.Linear(s.intermediate_size, s.hidden_size, bias=False)


class _Block(nn.Module):
    def __init__(self, s: GLASpec):
        super().__init__()
        self.attn_norm = _Norm(s.hidden_size)
        self.attn = _Attention(s)
        self.mlp_norm = _Norm(s.hidden_size)
        self.mlp = _MLP(s)


class _Backbone(nn.Module):
    def __init__(self, s: GLASpec):
        super().__init__()
        self.embeddings = nn.Embedding(s.vocab_size, s.hidden_size)
        self.layers = nn.ModuleList(_Block(s) for _ in range(s.n_layer))
        self.norm = _Norm(s.hidden_size)


class GLALM(RecurrentLM):
    family = "gla"
    # the forget gate by our Triton kernels (its own launch in the prefill, inside the step kernel in the decode);
    # False: PyTorch's five ops per layer, the code of before (benchmarks/gla_gate.py times one against the other)
    fuse_gate = True
    # the prefill on fla's kernels keeps the recurrent state on chip across chunks (kernels/mamba/gla_chunk_triton);
    # False: fla's chunk_gla as it is, which writes every chunk's state (benchmarks/gla_chunk.py: A/B)
    states_on_chip = True

    def __init__(self, spec: GLASpec, config: Optional[dict] = None, kernels: str = "auto"):
        super().__init__()
        self.spec = spec
        self.config = dict(config or {})
        self.vocab_rows = spec.vocab_rows
        if kernels not in ("auto", "torch", "triton", "fla"):
            raise ValueError(f"kernels must be auto, torch, triton (decode) or fla (prefill), got {kernels!r}")
        self.kernels = kernels
        self.model = _Backbone(spec)
        self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        if spec.tie:
            self.lm_head.weight = self.model.embeddings.weight

    # ------------------------------------------------------------------ packed projections
    def _packs(self, blk: _Block):
        """The Linear layers whose weights are packed into one matrix, per owner: the attention's input projections
        (q, k, v, the output gate g, the gate's low-rank first half) and the MLP's gate / up."""
        a, m = blk.attn, blk.mlp
        first = [a.q_proj, a.k_proj, a.v_proj] + ([a.g_proj] if self.spec.use_output_gate else []) + [a.gk_proj[0]]
        return (a, first), (m, [m.gate_proj, m.up_proj])

    def pack_weights(self) -> None:
        """Re-home each group of :meth:`_packs` as row blocks of one matrix (the parameters become views of it, so
        nothing is duplicated and the state dict is unchanged): one matmul instead of five (two) reads ``h`` once,
        and at decode batch sizes each matmul costs its launch and latency more than its bytes (GLA-1.3B on an
        H100: nine decode matmuls per layer at 5-13 µs each; benchmarks/gla_decode_pack.py times the packed step
        against the separate one). Runs after every ``.to()`` / ``.cuda()`` / dtype change
        (:meth:`_apply`); parameters replaced otherwise (``load_state_dict(assign=True)``) are noticed and the
        separate matmuls used until the next packing."""
        self.release_graphs()  # captured decode steps read the weights they were captured with
        grad_ok = not torch.is_inference_mode_enabled()
        with torch.no_grad():
            for blk in self.model.layers:
                for owner, mods in self._packs(blk):
                    ws = [mod.weight for mod in mods]
                    if (any(mod.bias is not None for mod in mods) or len({(w.device, w.dtype) for w in ws}) > 1
                            or ws[0].device.type == "meta"):
                        owner.__dict__.pop("_packed", None)
                        continue
                    fused = torch.cat(ws, 0)
                    off = 0
                    for mod, w in zip(mods, ws):
                        mod.weight = nn.Parameter(fused[off:off + w.shape[0]],
                                                  requires_grad=w.requires_grad and grad_ok)
                        off += w.shape[0]
                    owner.__dict__["_packed"] = _Pack(fused, tuple(mods), tuple(mod.weight.data_ptr() for mod in mods),
                                                      [w.shape[0] for w in ws])

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self.pack_weights()
        return out

    @staticmethod
    def _packed(owner) -> Optional[_Pack]:
        """``owner``'s packing while its layers' weights are still the views :meth:`pack_weights` made, else None."""
        p = owner.__dict__.get("_packed")
        if p is None or tuple(mod.weight.data_ptr() for mod in p.mods) != p.ptrs:
            return None
        return p

    # ------------------------------------------------------------------ pieces shared by prefill and step
    def _qkvg(self, blk: _Block, h, packed: bool = False):
        """Projections of ``h [..., d]`` as heads: q, k, v [..., H, K|V] (key heads repeated for grouped queries);
        the forget gate's low-rank activations ``x [..., R]`` (:meth:`_gate` finishes it); the output gate's
        projection (None without one). ``packed``: one matmul for all of them when the weights are packed (decode:
        the outputs are strided views, which the decode kernel reads as they are)."""
        s, a = self.spec, blk.attn
        pack = self._packed(a) if packed else None
        if pack is not None:
            parts = F.linear(h, pack.weight).split(pack.sizes, dim=-1)
            q, k, v = parts[:3]
            gate = parts[3] if s.use_output_gate else None
            gk_low = parts[-1]
        else:
            q, k, v = a.q_proj(h), a.k_proj(h), a.v_proj(h)
            gate = a.g_proj(h) if s.use_output_gate else None
            gk_low = a.gk_proj[0](h)
        q = q.unflatten(-1, (s.num_heads, s.head_k))
        k = k.unflatten(-1, (s.num_kv_heads, s.head_k))
        v = v.unflatten(-1, (s.num_kv_heads, s.head_v))
        if s.groups > 1:  # fla: '... (h d) -> ... (h g) d'
            k, v = (t.repeat_interleave(s.groups, dim=-2) for t in (k, v))
        return q, k, v, gk_low, gate

    def _gate_args(self, blk: _Block, gk_low) -> tuple:
        """The arguments of :func:`gla_gate` after ``x``: fla's ``logsigmoid(gk_proj(h)) / 16``, clamped below
        at ``clamp_min`` when the config sets one."""
        second = blk.attn.gk_proj[1]
        return gk_low, second.weight, second.bias, GATE_LOGIT_NORMALIZER, self.spec.clamp_min

    def _gate(self, blk: _Block, gk_low, out_dtype, backend: str):
        """The log forget gate ``[..., H, K]`` in ``out_dtype`` (one Triton launch on CUDA)."""
        s = self.spec
        gk = gla_gate(*self._gate_args(blk, gk_low), out_dtype=out_dtype, backend=backend)
        gk = gk.unflatten(-1, (s.num_kv_heads, s.head_k))
        return gk.repeat_interleave(s.groups, dim=-2) if s.groups > 1 else gk

    def _out(self, a: _Attention, gate, o, dtype):
        """Gated RMSNorm per head (norm, weight, then silu(g)), heads concatenated, o_proj."""
        s = self.spec
        y = gated_rms_norm(o.reshape(*o.shape[:-2], s.value_dim), gate, a.g_norm_swish_gate.weight, s.eps,
                           o.shape[-2], dtype, norm_first=True, backend=self.norm_backend)
        return a.o_proj(y)

    def _mlp(self, blk: _Block, x):
        """``down(silu(gate x) ⊙ up x)``: packed, one gate / up matmul and the activation fused (float32 math, one
        rounding); else two matmuls and PyTorch's SiLU and product (in the model dtype)."""
        m = blk.mlp
        pack = self._packed(m)
        if pack is None:
            return m.down_proj(F.silu(m.gate_proj(x)) * m.up_proj(x))
        return m.down_proj(silu_mul(F.linear(x, pack.weight), backend=self.norm_backend))

    def _block(self, i: int, resid, attn_out, dtype):
        """From a block's attention output to the next block's normed input: ``resid += attn``, MLP on its norm,
        ``resid += mlp``, then the next block's attention norm (the final norm after the last block); each add
        fused with the norm after it. Returns ``(resid, h)``."""
        layers, s = self.model.layers, self.spec
        blk = layers[i]
        resid, x = self._add_rms_norm(resid, attn_out, blk.mlp_norm.weight, s.eps, dtype)
        nxt = self.model.norm.weight if i + 1 == len(layers) else layers[i + 1].attn_norm.weight
        return self._add_rms_norm(resid, self._mlp(blk, x), nxt, s.eps, dtype)

    # ------------------------------------------------------------------ interface
    def _prefill_core(self, input_ids, mask, want_state, last_only):
        s = self.spec
        dtype = self.model.embeddings.weight.dtype
        resid = self.model.embeddings(input_ids).float()
        states = []
        backend = {"torch": "torch", "fla": "fla"}.get(self.kernels, "auto")
        gate_backend = {"torch": "torch", "triton": "triton"}.get(self.kernels, "auto") if self.fuse_gate else "torch"
        # fla's kernels take the gate in the model dtype (as fla's layer passes it); our PyTorch path in float32
        fla = self.fuse_gate and (backend == "fla" or (backend == "auto" and fla_usable(input_ids)))
        h = self._rms_norm(resid, self.model.layers[0].attn_norm.weight, s.eps, dtype)
        for i, blk in enumerate(self.model.layers):
            q, k, v, gk_low, gate = self._qkvg(blk, h)
            gk = self._gate(blk, gk_low, dtype if fla else torch.float32, gate_backend)
            o, S = gla_prefill(q, k, v, gk, scale=s.head_k ** -0.5, mask=mask, backend=backend,
                               states_on_chip=self.states_on_chip)
            states.append({"S": S.float().contiguous()} if want_state else None)
            attn_out = self._out(blk.attn, gate, o, dtype)
            if last_only and i + 1 == len(self.model.layers):  # the last block's MLP on the last position only
                resid, attn_out = resid[:, -1:], attn_out[:, -1:]
            resid, h = self._block(i, resid, attn_out, dtype)
        return self.lm_head(h), states

    def _step_core(self, ids, layers):
        s = self.spec
        dtype = self.model.embeddings.weight.dtype
        resid = self.model.embeddings(ids).float()
        backend = {"torch": "torch", "triton": "triton"}.get(self.kernels, "auto")
        h = self._rms_norm(resid, self.model.layers[0].attn_norm.weight, s.eps, dtype)
        for i, (blk, st) in enumerate(zip(self.model.layers, layers)):
            q, k, v, gk_low, gate = self._qkvg(blk, h, packed=True)
            if self.fuse_gate:  # one kernel: the gate, the step, o in the model dtype
                o = gla_step(st["S"], q, k, v, None, s.head_k ** -0.5, backend=backend,
                             gate=self._gate_args(blk, gk_low), out_dtype=dtype)
            else:
                gk = self._gate(blk, gk_low, torch.float32, "torch")
                o = gla_step(st["S"], q, k, v, gk, s.head_k ** -0.5, backend=backend).to(dtype)
            resid, h = self._block(i, resid, self._out(blk.attn, gate, o, dtype), dtype)
        return self.lm_head(h).float()


# ===================================================================================== loading
def convert_state_dict(sd: dict, spec: GLASpec, where: str = "checkpoint") -> dict:
    """fla checkpoints → our names: the older fused ``mlp.gate_proj [2m, d]`` is split into gate / up (first half
    gate), ``attn.g_norm`` (fuse_norm off) becomes ``attn.g_norm_swish_gate``; a tied head is filled in."""
    out = OrderedDict()
    for k, v in sd.items():
        if k.endswith(".attn.g_norm.weight"):
            k = k[: -len("g_norm.weight")] + "g_norm_swish_gate.weight"
        out[k] = v
    for i in range(spec.n_layer):
        gate, up = f"model.layers.{i}.mlp.gate_proj.weight", f"model.layers.{i}.mlp.up_proj.weight"
        if gate in out and up not in out:
            w = out[gate]
            if w.ndim != 2 or w.shape[0] != 2 * spec.intermediate_size:
                raise CheckpointError(f"{where}: {gate} {tuple(w.shape)} has no {up}; a fused gate/up weight must "
                                      f"have 2 × {spec.intermediate_size} rows")
            out[gate], out[up] = w[: spec.intermediate_size], w[spec.intermediate_size:]
    if spec.tie and "lm_head.weight" not in out and "model.embeddings.weight" in out:
        out["lm_head.weight"] = out["model.embeddings.weight"]
    return out


def build_model(spec: GLASpec, config: Optional[dict] = None, device=None, **opts) -> GLALM:
    with torch.device(device or "cpu"):
        return GLALM(spec, config, **opts)


def load_model(pretrained: str, *, device="cpu", dtype: torch.dtype = torch.float32, kernels: str = "auto",
               cuda_graphs: bool = True, max_length: int = 2048) -> GLALM:
    """Load an fla GLA checkpoint (hub id or folder), strictly (named missing / unexpected / mis-shaped keys)."""
    folder = checkpoint_dir(pretrained)
    config = read_config(folder)
    raw = read_state_dict(folder)
    spec = parse_config(config, raw, f"{folder}/config.json")
    sd = convert_state_dict(raw, spec, str(folder))
    model = build_model(spec, config, device="meta", kernels=kernels)
    check_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()}, sd, str(folder))
    model.load_state_dict(sd, strict=True, assign=True)
    if spec.tie:
        model.lm_head.weight = model.model.embeddings.weight
    model.cuda_graphs = cuda_graphs
    model.max_length = max_length
    return model.to(device=device, dtype=dtype).eval()


# ===================================================================================== tiny checkpoints
def tiny_config(**overrides) -> dict:
    """A small fla GLA config.json (the released keys; widths: d 64, 2 heads of K 16 / V 32, 3 layers).

    The vocabulary defaults to GPT-2's 50257 with the GPT-2 tokenizer files written beside it: the real GLA
    tokenizer (Llama-2, 32000) is not available offline. ``vocab_size=32000`` gives the real size (no tokenizer)."""
    cfg = {"model_type": "gla", "architectures": ["GLAForCausalLM"], "attn_mode": "chunk", "bos_token_id": 50256,
           "eos_token_id": 50256, "clamp_min": None, "conv_size": 4, "elementwise_affine": True, "expand_k": 0.5,
           "expand_v": 1, "feature_map": None, "fuse_cross_entropy": True, "fuse_norm": True, "hidden_act": "swish",
           "hidden_ratio": 4, "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": None,
           "max_position_embeddings": 2048, "norm_eps": 1e-6, "num_heads": 2, "num_hidden_layers": 3,
           "num_kv_heads": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "use_cache": True, "use_gk": True, "use_gv": False, "use_output_gate": True, "use_short_conv": False,
           "vocab_size": 50257}
    cfg.update(overrides)
    if cfg["vocab_size"] != 50257:  # not GPT-2's vocabulary: Llama-2's special ids, as the real checkpoints
        cfg.setdefault("bos_token_id", 1)
        for key, value in (("bos_token_id", 1), ("eos_token_id", 2)):
            if key not in overrides:
                cfg[key] = value
    return cfg


def random_gla_weights(spec: GLASpec, seed: int = 0, device="cpu") -> "OrderedDict[str, torch.Tensor]":
    """Deterministic random weights in fla's names (split MLP): unit-scale embeddings, forget gates mostly open
    (gk bias ~ 2, like a trained model), residual-branch scaling of o_proj / down_proj."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in GLALM(spec).state_dict().items()}
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=gen, device=device)

    sd = OrderedDict()
    for name, shape in shapes.items():
        if name.endswith("norm.weight") or name.endswith("norm_swish_gate.weight"):
            t = 1 + 0.1 * randn(shape)
        elif name.endswith("gk_proj.1.bias"):
            t = 2 + randn(shape)
        elif name.endswith(".bias"):
            t = 0.1 * randn(shape)
        elif name.endswith("embeddings.weight") or name == "lm_head.weight":
            t = (0.25 if name == "lm_head.weight" else 1.0) * randn(shape)
        else:
            t = randn(shape) / math.sqrt(shape[1])
            if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                t = t / math.sqrt(2 * spec.n_layer)
        sd[name] = t.float().contiguous()
    if spec.tie:
        sd["lm_head.weight"] = sd["model.embeddings.weight"]
    return sd


def write_tiny_checkpoint(out_dir, seed: int = 0, mlp: str = "split", tokenizer: Optional[bool] = None,
                          **overrides) -> Path:
    """Write a tiny random GLA checkpoint in fla's HF format (config.json, model.safetensors, tokenizer files).

    ``mlp="split"``: ``gate_proj`` / ``up_proj`` (fla since Feb 2025); ``mlp="fused"``: the older single
    ``gate_proj [2m, d]``. Tokenizer files (GPT-2) are written when the vocabulary is GPT-2's."""
    from safetensors.torch import save_file

    if mlp not in ("split", "fused"):
        raise ValueError(f"mlp must be 'split' or 'fused', got {mlp!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_config(**overrides)
    spec = parse_config(config)
    sd = random_gla_weights(spec, seed)
    if mlp == "fused":
        for i in range(spec.n_layer):
            pre = f"model.layers.{i}.mlp."
            sd[pre + "gate_proj.weight"] = torch.cat([sd[pre + "gate_proj.weight"], sd.pop(pre + "up_proj.weight")])
    if spec.tie:
        sd.pop("lm_head.weight", None)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(dict(sd), str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer if tokenizer is not None else spec.vocab_size == 50257:
        from jrt_eval.tokenization import load_tokenizer

        load_tokenizer("gpt2").save_pretrained(out)
    return out
