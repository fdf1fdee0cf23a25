"""Model families: which module loads each, how to recognise a checkpoint, and the paper's run defaults.

Defaults follow the paper's harness (reference-tasks.md §5.3, reference-models.md §0): tokenizer per
family, max length 2048, and on CUDA the precision REF ran in (Based / JRT-RNN / attention: fp32 weights
under bf16 autocast; state-spaces Mamba / Mamba-2: fp16; hazyresearch Mamba: fp32; GLA: bf16). On CPU
everything runs in fp32. The pad id is only used by ``reference_quirks`` (REF let pads into the state).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional

from .hub import CheckpointError, checkpoint_dir, read_config


@dataclass(frozen=True)
class Family:
    name: str
    module: str  # jrt_eval.model_adapters.<module> with load_model(pretrained, device=, dtype=, **opts)
    cuda_dtype: str  # "float32" | "float16" | "bfloat16" | "amp_bf16" (fp32 weights, bf16 autocast)
    ref_pad_id: int  # the id REF padded with (GPT-2 " " = 220; GPT-NeoX / Llama id 0)


FAMILIES = {
    "based": Family("based", "hazy_gpt", "amp_bf16", 220),
    "jrt_rnn": Family("jrt_rnn", "hazy_gpt", "amp_bf16", 220),
    "attn": Family("attn", "hazy_gpt", "amp_bf16", 220),
    "mamba": Family("mamba", "mamba", "float16", 0),
    "mamba2": Family("mamba2", "mamba2", "float16", 0),
    "gla": Family("gla", "gla", "bfloat16", 0),
}
MAX_LENGTH = 2048  # jrt_lm.py / mamba_lm.py in REF; GLA's config says 2048 too


def family_module(family: str):
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    return importlib.import_module(f"jrt_eval.model_adapters.{FAMILIES[family].module}")


def detect_family(config: dict) -> Optional[str]:
    """The family of a checkpoint's config.json, or None."""
    hazy = importlib.import_module("jrt_eval.model_adapters.hazy_gpt").detect_family(config)
    if hazy:
        return hazy
    for name in ("mamba2", "mamba", "gla"):  # Mamba-2 first: its config is a superset of Mamba's
        if family_module(name).detect(config):
            return name
    return None


def resolve_family(pretrained: str, requested: Optional[str] = None, revision: Optional[str] = None) -> tuple:
    """(family, checkpoint folder); checks that a requested family matches what the config says."""
    folder = checkpoint_dir(pretrained, revision)
    found = detect_family(read_config(folder))
    if requested is None:
        if found is None:
            raise CheckpointError(
                f"{pretrained}: config.json matches no known family ({', '.join(FAMILIES)}); pass the family "
                "as --model <family>, or check the checkpoint")
        return found, folder
    if requested not in FAMILIES:
        raise ValueError(f"unknown model family {requested!r}; known: {', '.join(FAMILIES)}")
    if found is not None and found != requested:
        raise CheckpointError(f"{pretrained} is a {found} checkpoint, not {requested}; use --model {found} or jrt_auto")
    return requested, folder


def is_hazy_mamba(config: dict) -> bool:
    """hazyresearch Mamba checkpoints carry GPT keys and use the GPT-2 tokenizer and fp32 (REF)."""
    return "n_embd" in config or "n_head" in config
