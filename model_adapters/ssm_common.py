"""Shared pieces of the Mamba, Mamba-2 and GLA adapters: config reading, strict state-dict checks, the
recurrent-state cache, and CUDA-graph replay of the decode step.

Decode on GPU is launch-bound (a few hundred small kernels per token for a 24-layer model), so the step of
each family is captured once per batch size in a CUDA graph and replayed. The cache of the prompt batch is
copied into the graph's static state tensors at its first step; from then on ``select(rows)`` only narrows
the set of live rows (finished rows keep running in the graph, harmlessly: every op is row-independent),
so a shrinking batch never forces a re-capture. A second cache stepping through the same graph takes the
static tensors over and the first one gets its own copy back, so interleaved caches stay correct.

Autocast: a replayed graph runs the kernels it recorded, whatever autocast region it is replayed in, so the
autocast state (on/off, dtype) at capture is part of every graph's key and of the bound graph's check. The
step is captured with autocast's weight cache off: that cache (fp32 parameter -> bf16 copy) lives until the
outermost autocast region exits, so a cast cached before the capture would be read by the graph from memory
that is freed (and reused) after the region ends; with the cache off the casts are recorded in the graph and
redone at every replay (the same values).
"""
from __future__ import annotations

import logging
import math
import re
import weakref
from collections import OrderedDict
from contextlib import nullcontext
from typing import Callable, Optional

import torch
import torch.nn as nn

from jrt_eval.kernels.mamba import add_rms_norm, gated_rms_norm

from .hub import CheckpointError, check_keys

log = logging.getLogger("jrt_eval")


# ============================================================================ config and weights
def cfg_int(config: dict, key: str, default=None, where: str = "config.json", minimum: int = 1) -> int:
    value = config.get(key, default)
    if value is None:
        raise CheckpointError(f"{where}: missing {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < minimum:
        raise CheckpointError(f"{where}: {key!r} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def cfg_float(config: dict, key: str, default=None, where: str = "config.json") -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CheckpointError(f"{where}: {key!r} must be a number, got {value!r}")
    return float(value)


def cfg_bool(config: dict, key: str, default: bool, where: str = "config.json") -> bool:
    value = config.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CheckpointError(f"{where}: {key!r} must be true or false, got {value!r}")
    return value


def padded_vocab(vocab_size: int, multiple: int) -> int:
    return -(-vocab_size // multiple) * multiple


def strip_lightning(sd: dict) -> dict:
    """hazyresearch files: drop a leading ``model.`` and every ``*metrics*`` counter (REF's from_pretrained_hf)."""
    return {re.sub(r"^model\.", "", k): v for k, v in sd.items() if "metrics" not in k}


def check_state_dict(expected: dict, sd: dict, what: str) -> None:
    """Strict load check: named missing / unexpected keys, then shapes, then float dtypes."""
    check_keys(set(expected), set(sd), what)
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(v)})" for k, v in expected.items()
             if tuple(sd[k].shape) != tuple(v)]
    if wrong:
        raise CheckpointError(f"{what}: tensor shapes do not match config.json: " + "; ".join(wrong[:8])
                              + (f" … (+{len(wrong) - 8})" if len(wrong) > 8 else ""))
    bad = [k for k in expected if not sd[k].is_floating_point()]
    if bad:
        raise CheckpointError(f"{what}: non-float weights {bad[:8]}")


def resolve_tied_head(sd: dict, emb_key: str, head_key: str, tie: bool, what: str) -> None:
    """Tied embeddings: accept the embedding, the head, or both (then they must be equal); leave both keys
    in ``sd``, pointing to one tensor. Untied: both must be present (the key check reports it)."""
    if not tie:
        return
    have_emb, have_head = emb_key in sd, head_key in sd
    if have_emb and have_head:
        a, b = sd[emb_key], sd[head_key]
        if a.shape != b.shape or (a.data_ptr() != b.data_ptr() and not torch.equal(a, b)):
            raise CheckpointError(f"{what}: config ties the embeddings but {emb_key} and {head_key} differ")
        sd[head_key] = a
    elif have_head:
        sd[emb_key] = sd[head_key]
    elif have_emb:
        sd[head_key] = sd[emb_key]


def mamba_ssm_to_hf_keys(sd: dict, tie: bool, where: str, strip: bool = False) -> dict:
    """mamba_ssm / hazyresearch / transformers keys -> transformers' ``Mamba(2)ForCausalLM`` keys, tied head
    resolved. hazyresearch files (``strip``, or ``model.`` / ``*metrics*`` keys seen) lose the Lightning wrapping."""
    if strip or any(k.startswith("model.") for k in sd) or any("metrics" in k for k in sd):
        sd = strip_lightning(sd)
    out = OrderedDict()
    for k, v in sd.items():
        if k.startswith("backbone.embedding."):
            k = "backbone.embeddings." + k[len("backbone.embedding."):]
        out[k] = v
    resolve_tied_head(out, "backbone.embeddings.weight", "lm_head.weight", tie, where)
    return out


def meta_shapes(module_cls, config) -> dict:
    """{key: shape} of ``module_cls(config)``'s state dict, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        ref = module_cls(config)
    return {k: tuple(v.shape) for k, v in ref.state_dict().items()}


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, out_dtype=None, backend: str = "torch") -> torch.Tensor:
    """``w ⊙ x / sqrt(mean(x²) + eps)`` in float32, cast to ``out_dtype`` (default: the weight's dtype): the
    kernels' gated RMSNorm without a gate, so ``backend`` "auto" / "triton" is one Triton pass on CUDA
    (kernels/mamba/norm_triton.py) and "torch" the PyTorch math."""
    return gated_rms_norm(x, None, weight, eps, 1, out_dtype or weight.dtype, norm_first=True, backend=backend)


def as_mask(attention_mask: Optional[torch.Tensor], input_ids: torch.Tensor) -> Optional[torch.Tensor]:
    """Validate a left-padding mask; ``None`` when every position is real (the fast, unmasked path)."""
    if attention_mask is None:
        return None
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} does not match input_ids {tuple(input_ids.shape)}")
    mask = attention_mask.to(device=input_ids.device)
    if bool(mask.all()):
        return None
    m = mask.long()
    if bool((m[:, 1:] < m[:, :-1]).any()):
        raise ValueError("attention_mask must be left padding (0s then 1s in every row)")
    return m


# ============================================================================ cache and decode graphs
def _export(t: torch.Tensor) -> torch.Tensor:
    return t if torch.is_inference_mode_enabled() else t.clone()


class StateCache:
    """Recurrent state after a prefix: ``layers[i]`` maps a state name to a tensor with the batch first.

    Implements base.py's ``select(rows)`` (in place; returns itself). While bound to a CUDA graph the tensors
    are the graph's full-batch static buffers and ``rows`` lists the live rows among them.
    """

    def __init__(self, layers: list):
        self.layers = layers
        self.rows: Optional[torch.Tensor] = None
        self._runner = None

    @property
    def batch_size(self) -> int:
        if self.rows is not None:
            return int(self.rows.numel())
        return next(iter(self.layers[0].values())).shape[0]

    def select(self, rows) -> "StateCache":
        device = next(iter(self.layers[0].values())).device
        with torch.inference_mode():
            rows = torch.as_tensor(rows, dtype=torch.long, device=device)
            if self.rows is not None:
                self.rows = self.rows[rows]
            else:
                self.layers = [{k: v.index_select(0, rows) for k, v in layer.items()} for layer in self.layers]
        return self

    def live_layers(self) -> list:
        """The states of the live rows (copies while bound to a graph)."""
        if self.rows is None:
            return self.layers
        with torch.inference_mode():
            return [{k: v.index_select(0, self.rows) for k, v in layer.items()} for layer in self.layers]

    def _unbind(self) -> None:
        with torch.inference_mode():
            self.layers = [{k: v.clone() for k, v in layer.items()} for layer in self.live_layers()]
        self.rows, self._runner = None, None


def autocast_state(device_type: str) -> tuple:
    """(enabled, dtype) of autocast for ``device_type`` now: part of every decode graph's key."""
    if torch.is_autocast_enabled(device_type):
        return True, torch.get_autocast_dtype(device_type)
    return False, None


def _copy_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst.copy_(src)``; a ``src`` smaller along some dims (a KV cache of fewer columns than the static buffer)
    fills the leading corner and the rest of ``dst`` is zeroed (False for masks)."""
    if dst.shape == src.shape:
        dst.copy_(src)
        return
    if src.dim() != dst.dim() or any(s > d for s, d in zip(src.shape, dst.shape)):
        raise ValueError(f"state {tuple(src.shape)} does not fit the static buffer {tuple(dst.shape)}")
    diff = [i for i, (s, d) in enumerate(zip(src.shape, dst.shape)) if s != d]
    if len(diff) == 1:
        i, n = diff[0], src.shape[diff[0]]
        dst.narrow(i, 0, n).copy_(src)
        dst.narrow(i, n, dst.shape[i] - n).zero_()
    else:
        dst.zero_()
        dst[tuple(slice(0, n) for n in src.shape)].copy_(src)


class _StepGraph:
    """One decode step over static full-batch buffers: captured as a CUDA graph (``capture=True``), or run eagerly
    on the same buffers (``capture=False``, any device: the bookkeeping without the graph, for tests/debugging).

    ``autocast``: the (enabled, dtype) state the step runs under (default: the current one); the step is always
    called under it with autocast's weight cache off (see the module docstring)."""

    def __init__(self, step_fn: Callable, template: list, batch: int, device: torch.device, capture: bool = True,
                 autocast: Optional[tuple] = None):
        self.batch = batch
        self.step_fn = step_fn
        self.device_type = torch.device(device).type
        self.autocast = tuple(autocast) if autocast is not None else autocast_state(self.device_type)
        self.ids = torch.zeros(batch, dtype=torch.long, device=device)
        self.layers = [{k: torch.zeros_like(v) for k, v in layer.items()} for layer in template]
        self.graph = None
        self.logits = None
        self.owner = None
        if not capture:
            return
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # compiles Triton kernels, creates cuBLAS handles, fills autotune caches
                self._call()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._call()

    def _call(self) -> torch.Tensor:
        enabled, dtype = self.autocast
        ctx = (torch.autocast(self.device_type, dtype=dtype, cache_enabled=False) if enabled else nullcontext())
        with ctx:
            return self.step_fn(self.ids, self.layers)

    def bind(self, cache: StateCache) -> None:
        if cache._runner is self:
            return
        prev = self.owner() if self.owner is not None else None
        if prev is not None and prev._runner is self:
            prev._unbind()
        for dst, src in zip(self.layers, cache.layers):
            for k, v in dst.items():
                _copy_into(v, src[k])
        cache.layers = self.layers
        cache.rows = torch.arange(self.batch, device=self.ids.device)
        cache._runner = self
        self.owner = weakref.ref(cache)

    def run(self, ids: torch.Tensor, cache: StateCache) -> torch.Tensor:
        self.ids.index_copy_(0, cache.rows, ids.to(self.ids.dtype))
        if self.graph is not None:
            self.graph.replay()
        else:
            self.logits = self._call()
        return self.logits.index_select(0, cache.rows)

    def release(self) -> None:
        prev = self.owner() if self.owner is not None else None
        if prev is not None and prev._runner is self:
            prev._unbind()


class RecurrentLM(nn.Module):
    """Base of the family models: subclasses implement ``_prefill_core`` and ``_step_core``.

    ``_step_core(ids [B], layers) -> logits [B, V] float32`` must update the state tensors in place and do no
    host synchronisation, so that it can be captured in a CUDA graph.
    """

    family = "?"
    max_length = 2048
    MAX_GRAPHS = 4

    def __init__(self):
        super().__init__()
        self.cuda_graphs = True
        self._graphs: dict = {}

    @property
    def norm_backend(self) -> str:
        """Backend of the RMSNorms and the other small fused kernels: the model's ``kernels`` option when it names
        one ("torch" / "triton"), else "auto" (Triton on CUDA; also GLA's "fla", a prefill choice, and models
        without the option)."""
        kernels = getattr(self, "kernels", "auto")
        return kernels if kernels in ("torch", "triton") else "auto"

    def _rms_norm(self, x, weight, eps: float, out_dtype):
        return rms_norm(x, weight, eps, out_dtype, backend=self.norm_backend)

    def _add_rms_norm(self, resid, delta, weight, eps: float, out_dtype):
        """``(resid + delta, its RMSNorm)``: the seam between pre-norm blocks (one Triton pass on CUDA)."""
        return add_rms_norm(resid, delta, weight, eps, out_dtype, backend=self.norm_backend)

    # --- to implement
    def _prefill_core(self, input_ids, mask, want_state: bool, last_only: bool):
        raise NotImplementedError

    def _step_core(self, ids: torch.Tensor, layers: list) -> torch.Tensor:
        raise NotImplementedError

    # --- interface (base.py)
    # Everything runs under inference mode (no autograd bookkeeping; cache tensors are updated in place); results
    # handed to a caller outside inference mode are cloned into ordinary tensors, so that the caller may edit
    # them (greedy_generate masks padded vocabulary rows in place).
    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        with torch.inference_mode():
            logits, _ = self._prefill_core(input_ids, as_mask(attention_mask, input_ids), want_state=False,
                                           last_only=False)
            logits = logits.float()
        return _export(logits)

    def prefill(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None):
        if input_ids.shape[1] == 0:
            raise ValueError("prefill needs at least one token per row")
        with torch.inference_mode():
            logits, state = self._prefill_core(input_ids, as_mask(attention_mask, input_ids), want_state=True,
                                               last_only=True)
            logits = logits[:, -1].float()
        return _export(logits), (state if hasattr(state, "select") else StateCache(state))

    def step(self, input_ids: torch.Tensor, cache) -> torch.Tensor:
        with torch.inference_mode():
            logits = self._step(input_ids.reshape(-1), cache)
        return _export(logits)

    def _step(self, input_ids: torch.Tensor, cache: StateCache) -> torch.Tensor:
        if self._graphable(input_ids):
            auto = autocast_state(input_ids.device.type)
            if cache._runner is not None and (cache._runner.autocast != auto or not self._graph_fits(cache)):
                cache._unbind()  # another autocast state (the graph's kernels do not apply) or buffers too small
            graph = cache._runner if cache._runner is not None else self._graph_for(cache, auto)
            if graph is not None:  # None: the capture failed, decode eagerly (_new_graph)
                graph.bind(cache)
                return graph.run(input_ids, cache)
        if cache._runner is not None:
            cache._unbind()
        return self._eager_step(input_ids, cache)

    def _eager_step(self, input_ids: torch.Tensor, cache: StateCache) -> torch.Tensor:
        return self._step_core(input_ids, cache.layers).float()

    # --- CUDA graphs
    def _graphable(self, input_ids) -> bool:
        """``cuda_graphs``: True = CUDA graphs on CUDA tensors; "static" = the same static-buffer decode without
        graph capture, on any device (exercises the bookkeeping on CPU); False = plain eager steps."""
        if self.cuda_graphs == "static":
            return True
        return bool(self.cuda_graphs) and input_ids.is_cuda and not torch.cuda.is_current_stream_capturing()

    def _graph_fits(self, cache: StateCache) -> bool:
        """Whether the graph ``cache`` is bound to can take its next step (fixed-size states: always)."""
        return True

    def _graph_for(self, cache: StateCache, auto: tuple) -> Optional[_StepGraph]:
        """The graph for an unbound cache under autocast state ``auto`` (captured on first use)."""
        batch = next(iter(cache.layers[0].values())).shape[0]
        device = next(self.parameters()).device
        key = (batch, next(self.parameters()).dtype, device, auto)
        graph = self._graphs.get(key)
        if graph is None:
            while len(self._graphs) >= self.MAX_GRAPHS:
                self._graphs.pop(next(iter(self._graphs))).release()
            graph = self._new_graph(cache.layers, batch, device, auto)
            if graph is not None:
                self._graphs[key] = graph
        return graph

    def _new_graph(self, template: list, batch: int, device, autocast: tuple) -> Optional[_StepGraph]:
        """A captured step, or None when the capture fails: then this model decodes eagerly from now on (same
        results, slower) instead of losing the evaluation. The caches' own tensors are untouched by a failed
        capture (warm-up and capture run on the graph's static buffers; bind copies the state in afterwards)."""
        capture = self.cuda_graphs != "static"
        try:
            return _StepGraph(self._step_core, template, batch, device, capture=capture, autocast=autocast)
        except Exception as exc:
            if not capture:
                raise
            log.warning("CUDA-graph capture of the %s decode step failed (%s: %s); decoding eagerly instead "
                        "(cuda_graphs=false)", self.family, type(exc).__name__, str(exc)[:300])
            self.cuda_graphs = False
            return None

    def release_graphs(self) -> None:
        for graph in self._graphs.values():
            graph.release()
        self._graphs.clear()

    def _apply(self, fn, *args, **kwargs):  # .to() / .half() / .cuda(): captured graphs point to old tensors
        if getattr(self, "_graphs", None):
            self.release_graphs()
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):  # copy.deepcopy / pickle: graphs are not copyable and point to this model's tensors
        return dict(super().__getstate__(), _graphs={})


# ============================================================================ tiny checkpoints
def random_ssm_weights(shapes: dict, n_layer: int, tie: bool, a_log_init: Callable, seed: int = 0,
                       device="cpu") -> "OrderedDict[str, torch.Tensor]":
    """Deterministic random weights (transformers names) with mamba_ssm-like magnitudes: Δ in [1e-3, 1e-1] at
    init, O(1) norms, residual-branch scaling, so that states carry information over long prompts.
    ``a_log_init(shape, randn, rand)`` gives A_log, the one tensor whose init differs between Mamba and Mamba-2."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=gen, device=device)

    def rand(shape):
        return torch.rand(shape, generator=gen, device=device)

    out = OrderedDict()
    for name, shape in shapes.items():
        if name == "lm_head.weight" and tie:
            continue
        if name.endswith("A_log"):
            t = a_log_init(shape, randn, rand)
        elif name.endswith(".D"):
            t = 1 + 0.1 * randn(shape)
        elif name.endswith(("dt_proj.bias", "dt_bias")):
            dt = torch.exp(rand(shape) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            t = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
        elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
            t = 1 + 0.1 * randn(shape)
        elif name.endswith("conv1d.weight"):
            t = randn(shape) / math.sqrt(shape[-1])
        elif name.endswith(".bias"):
            t = 0.1 * randn(shape)
        elif "embeddings" in name or name == "lm_head.weight":
            t = 0.25 * randn(shape)
        else:
            t = randn(shape) / math.sqrt(shape[1])
            if name.endswith("out_proj.weight"):
                t = t / math.sqrt(n_layer)
        out[name] = t.float().contiguous()
    return out


def save_mamba_ssm_checkpoint(out, config: dict, weights: dict, tie: bool, hazy: bool = False) -> None:
    """Write config.json + pytorch_model.bin in mamba_ssm's layout (``backbone.embedding``, tied ``lm_head``
    sharing storage as ``torch.save(state_dict())`` writes it); ``hazy`` adds the hazyresearch ``model.``
    prefix and int64 ``*metrics*`` counters."""
    import json

    sd = OrderedDict()
    for k, v in weights.items():
        if k.startswith("backbone.embeddings."):
            k = "backbone.embedding." + k[len("backbone.embeddings."):]
        sd[k] = v
    if tie:
        sd["lm_head.weight"] = sd["backbone.embedding.weight"]
    if hazy:
        sd = OrderedDict((f"model.{k}", v) for k, v in sd.items())
        for split in ("train", "val", "test"):
            sd[f"model.{split}_metrics.num-tokens.count"] = torch.tensor(123456, dtype=torch.int64)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    torch.save(sd, out / "pytorch_model.bin")
