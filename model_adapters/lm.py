"""lm-eval models for the jrt-eval families: ``based``, ``jrt_rnn``, ``attn``, ``mamba``, ``mamba2``,
``gla`` and ``jrt_auto`` (reads the checkpoint's config.json and picks the family).

    lm_eval --model based --model_args pretrained=hazyresearch/based-360m --tasks jrt_swde

Model args: ``pretrained`` (hub id or folder), ``tokenizer`` (default: the family's, as the paper),
``dtype`` (auto | float32 | bfloat16 | float16 | amp_bf16), ``device``, ``batch_size``, ``max_length``
(default 2048), ``max_gen_toks``, ``reference_quirks`` (reproduce the paper harness's defects), and the
family loaders' own options: ``impl`` (mamba/mamba2: ``fast`` | ``hf`` = transformers' forward),
``kernels`` (mamba, mamba2: ``auto`` (Triton on CUDA, PyTorch on CPU) | ``torch`` | ``triton``; gla: also
``fla``), ``cuda_graphs`` (decode steps replayed as CUDA graphs on CUDA: ``true``, the default for every
family; ``false`` eager, ``static`` for debugging; a failed capture falls back to eager with a warning),
``state_dtype`` (mamba, mamba2: the decode's SSM state, ``model`` = the weights' dtype, as mamba_ssm's cache
(default) | ``float32``).

Generation prefills every prompt once, then decodes greedily from the per-layer recurrent state, one
token per step for the whole batch; a row leaves the batch as soon as it hits a stop string or EOS.
Prompts are left-padded and the padding is masked out of every state, so the generated text does not
depend on the batch size or on which prompts share a batch. ``reference_quirks=True`` instead lets
the pad token into the state as the paper's harness did (pad " " for hazyresearch checkpoints, id 0
for the others), keeps generating through EOS with special tokens in the decoded text, uses the
Based decode step that adds each new key-value term twice, and lets JRT-RNN's encoder read the
continuation in loglikelihood requests.
"""
from __future__ import annotations

import inspect
import logging
from typing import Optional

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from jrt_eval.tokenization import decode_like_paper, load_tokenizer, resolve_tokenizer_name

from .base import cast_matmul_weights, greedy_generate, left_pad
from .families import FAMILIES, MAX_LENGTH, family_module, is_hazy_mamba, resolve_family
from .hub import read_config

log = logging.getLogger("jrt_eval")

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def _parse_opt(value):
    """Model-arg strings from the CLI ("true", "3") as Python values; other values unchanged."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def _as_bool(value) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def resolve_device(device: Optional[str]) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        log.warning("device %s requested but CUDA is not available: running on CPU", device)
        return torch.device("cpu")
    return dev


def make_current(device: torch.device) -> None:
    """A numbered CUDA device (``device=cuda:1``) becomes the current one: Triton launches its kernels, and torch
    captures CUDA graphs, on the current device, whatever device the tensors live on."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def resolve_dtype(dtype, family: str, device: torch.device, hazy_mamba: bool = False) -> tuple:
    """(weight dtype, autocast dtype or None) for a dtype name; "auto" = the paper's precision on CUDA."""
    name = str(dtype or "auto").replace("torch.", "").lower()
    if name == "auto":
        name = ("float32" if hazy_mamba else FAMILIES[family].cuda_dtype) if device.type == "cuda" else "float32"
    if name in ("amp_bf16", "autocast_bf16"):
        return torch.float32, (torch.bfloat16 if device.type == "cuda" else None)
    if name not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; use auto, float32, bfloat16, float16 or amp_bf16")
    weight = _DTYPES[name]
    if weight == torch.float16 and device.type == "cpu":
        raise ValueError("dtype float16 is not supported on CPU here; use float32 or bfloat16")
    return weight, None


class JRTLM(TemplateLM):
    """Shared lm-eval front end; subclasses fix the family (``FAMILY = None`` reads it from config.json)."""

    FAMILY: Optional[str] = None

    def __init__(
        self,
        pretrained: str,
        tokenizer: Optional[str] = None,
        dtype="auto",
        device: Optional[str] = None,
        batch_size=1,
        max_batch_size=None,
        max_length: Optional[int] = None,
        max_gen_toks: int = 256,
        reference_quirks=False,
        revision: Optional[str] = None,
        **kwargs,
    ) -> None:
        super().__init__()
        self.pretrained = str(pretrained)
        self.family, folder = resolve_family(self.pretrained, self.FAMILY, revision)
        loader = family_module(self.family).load_model
        # family-specific loader options (e.g. impl, kernels; cuda_graphs of every loader)
        accepted = set(inspect.signature(loader).parameters) - {"pretrained", "device", "dtype", "max_length"}
        family_opts = {k: _parse_opt(kwargs.pop(k)) for k in list(kwargs) if k in accepted}
        if kwargs:
            log.warning("jrt-eval %s: ignoring unknown model args %s", self.family, sorted(kwargs))
        config = read_config(folder)
        hazy_mamba = self.family == "mamba" and is_hazy_mamba(config)
        self._device = resolve_device(device)
        make_current(self._device)
        weight_dtype, self._autocast = resolve_dtype(dtype, self.family, self._device, hazy_mamba)
        self.reference_quirks = _as_bool(reference_quirks)

        self._tokenizer_name = resolve_tokenizer_name(tokenizer, self.pretrained)
        self.tokenizer = load_tokenizer(self._tokenizer_name)
        if "reference_quirks" in accepted:
            family_opts["reference_quirks"] = self.reference_quirks
        self.model = loader(str(folder), device=self._device, dtype=weight_dtype, **family_opts)
        self.model.eval()
        if self._autocast is not None:
            cast_matmul_weights(self.model, self._autocast)
        self.vocab_limit = len(self.tokenizer)
        if self.vocab_limit > self.model.vocab_rows:
            raise ValueError(
                f"tokenizer {self._tokenizer_name!r} has {self.vocab_limit} tokens but {self.pretrained} has only "
                f"{self.model.vocab_rows} embedding rows: wrong tokenizer for this checkpoint?")

        self._max_length = int(max_length) if max_length else MAX_LENGTH
        self.max_gen_toks = int(max_gen_toks)
        bs = str(batch_size)
        self.batch_size = (32 if self._device.type == "cuda" else 4) if bs.startswith("auto") else int(bs)
        if max_batch_size and self.batch_size > int(max_batch_size) and bs.startswith("auto"):
            self.batch_size = int(max_batch_size)
        eos = self.tokenizer.eos_token_id
        self._eot = eos if eos is not None else self.tokenizer.pad_token_id
        self.pad_id = FAMILIES[self.family].ref_pad_id if self.reference_quirks else (self._eot or 0)
        if self.reference_quirks and self.family == "mamba" and hazy_mamba:
            self.pad_id = 220
        self.dtype_name = "amp_bf16" if self._autocast is not None else str(weight_dtype).replace("torch.", "")
        self.truncated = 0  # prompts cut from the left to fit max_length (reported in warnings)

    # ------------------------------------------------------------------ lm-eval plumbing
    @property
    def eot_token_id(self) -> int:
        return self._eot

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self):
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return self._tokenizer_name

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, **kwargs) -> list:
        # REF encodes prompts without BOS for every model (reference-tasks.md §5.2)
        return self.tokenizer(string, add_special_tokens=bool(add_special_tokens), verbose=False)["input_ids"]

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return decode_like_paper(self.tokenizer, tokens, skip_special_tokens=skip_special_tokens)

    def get_model_info(self) -> dict:
        return {
            "model_num_parameters": sum(p.numel() for p in self.model.parameters()),
            "model_dtype": self.dtype_name,
            "jrt_family": self.family,
            "jrt_tokenizer": self._tokenizer_name,
            "jrt_reference_quirks": self.reference_quirks,
            "jrt_truncated_prompts": self.truncated,
        }

    def _autocast_ctx(self):
        if self._autocast is None:
            return torch.autocast(self._device.type, enabled=False)
        return torch.autocast(self._device.type, dtype=self._autocast)

    def _batch(self, sequences: list) -> tuple:
        ids, mask = left_pad(sequences, self.pad_id, self._device)
        return ids, (None if self.reference_quirks else mask)

    def _fit(self, tokens: list, budget: int) -> list:
        if len(tokens) > budget:
            self.truncated += 1
            log.warning("prompt of %d tokens left-truncated to %d (max_length %d minus generation budget), "
                        "as lm-eval does", len(tokens), budget, self.max_length)
            return tokens[-budget:]
        return tokens

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list:
        encoded = {}

        def tokens_of(context: str) -> list:
            if context not in encoded:
                encoded[context] = self.tok_encode(context)
            return encoded[context]

        # REF's order: longest prompts first (ties by text), cut into consecutive batches
        collator = Collator(
            [req.args for req in requests],
            sort_fn=lambda args: (-len(tokens_of(args[0])), args[0]),
            group_by="gen_kwargs",
        )
        results = []
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="Running generate_until requests")
        for chunk in collator.get_batched(n=self.batch_size, batch_fn=None):
            contexts, all_kwargs = zip(*chunk)
            kwargs = dict(all_kwargs[0])
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_gen = int(kwargs.pop("max_gen_toks", kwargs.pop("max_new_tokens", self.max_gen_toks)))
            if _as_bool(kwargs.pop("do_sample", False)) or float(kwargs.pop("temperature", 0.0) or 0.0) > 0:
                raise ValueError("jrt-eval models decode greedily; do_sample/temperature > 0 is not supported")
            budget = self.max_length - max_gen
            prompts = [self._fit(tokens_of(c), budget) for c in contexts]
            texts = self._generate(prompts, until, max_gen)
            for context, gen_kwargs, text in zip(contexts, all_kwargs, texts):
                results.append(text)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            bar.update(len(contexts))
        bar.close()
        return collator.get_original(results)

    def _generate(self, prompts: list, until: list, max_gen: int) -> list:
        stop_on_eos = not self.reference_quirks
        eos = self.eot_token_id

        def text_of(tokens):
            if stop_on_eos and tokens and tokens[-1] == eos:
                tokens = tokens[:-1]
            return self.tok_decode(tokens, skip_special_tokens=stop_on_eos)

        def is_done(tokens):
            if stop_on_eos and tokens[-1] == eos:
                return True
            text = text_of(tokens)
            return any(s in text for s in until)

        ids, mask = self._batch(prompts)
        with torch.inference_mode(), self._autocast_ctx():
            out = greedy_generate(self.model, ids, mask, max_gen, is_done, vocab_limit=self.vocab_limit)
        texts = []
        for tokens in out.tokens:
            text = text_of(tokens)
            for stop in until:  # cut at the first occurrence of each stop string, in order (as lm-eval)
                text = text.split(stop)[0]
            texts.append(text)
        return texts

    # ------------------------------------------------------------------ loglikelihood
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list:
        def sort_key(req):
            toks = req[1] + req[2]
            return -len(toks), tuple(toks)

        collator = Collator(requests, sort_fn=sort_key)
        results = []
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="Running loglikelihood requests")
        for chunk in collator.get_batched(n=self.batch_size, batch_fn=None):
            rows, conts, enc_lens = [], [], []
            for _, ctx, cont in chunk:
                whole = (ctx + cont)[-(self.max_length + 1):]
                inp = whole[:-1]
                rows.append(inp)
                conts.append(cont)
                enc_lens.append(max(len(inp) - len(cont) + 1, 0))  # tokens of the context inside the input
            ids, mask = self._batch(rows)
            call = {}
            if self.family == "jrt_rnn" and not self.reference_quirks:
                # JRT-RNN's non-causal encoder reads the context only, never the scored continuation
                call["encoder_lengths"] = torch.tensor(enc_lens, device=self._device)
            tail = max(map(len, conts))  # only the last positions predict continuation tokens
            with torch.inference_mode():
                with self._autocast_ctx():
                    logits = self.model(ids, mask, **call)[:, -tail:].float()
                logits[..., self.vocab_limit:] = float("-inf")
                logprobs = torch.log_softmax(logits, dim=-1)
            for i, cont in enumerate(conts):
                lp = logprobs[i, tail - len(cont):]  # positions predicting the continuation tokens
                target = torch.tensor(cont, device=lp.device)
                greedy = bool((lp.argmax(-1) == target).all())
                score = float(lp.gather(-1, target[:, None]).sum())
                results.append((score, greedy))
                self.cache_hook.add_partial("loglikelihood", chunk[i][0], (score, greedy))
            bar.update(len(chunk))
        bar.close()
        return collator.get_original(results)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list:
        out = []
        for (string,) in tqdm([req.args for req in requests], disable=disable_tqdm):
            windows = [
                ((), ctx, cont)
                for ctx, cont in map(
                    make_disjoint_window,
                    get_rolling_token_windows(
                        token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                        max_seq_len=self.max_length, context_len=1,
                    ),
                )
            ]
            scores = self._loglikelihood_tokens(windows, disable_tqdm=True)
            total = sum(s for s, _ in scores)
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        return out


@register_model("based")
class BasedLM(JRTLM):
    FAMILY = "based"


@register_model("jrt_rnn")
class JRTRNNLM(JRTLM):
    FAMILY = "jrt_rnn"


@register_model("attn")
class AttnLM(JRTLM):
    FAMILY = "attn"


@register_model("mamba")
class MambaLM(JRTLM):
    FAMILY = "mamba"


@register_model("mamba2")
class Mamba2LM(JRTLM):
    FAMILY = "mamba2"


@register_model("gla")
class GLALM(JRTLM):
    FAMILY = "gla"


@register_model("jrt_auto")
class AutoJRTLM(JRTLM):
    FAMILY = None
