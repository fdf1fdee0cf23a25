"""Which tokenizer a run uses, how it is loaded, and decoding as the paper's transformers did it.

* The paper cut documents with the evaluated model's tokenizer. When model args name none, the
  family default applies (reference-tasks.md §5.3): GPT-2 for hazyresearch checkpoints,
  GPT-NeoX-20B for state-spaces Mamba / Mamba-2; other checkpoints carry their own.
* The GPT-2 and GPT-NeoX-20B tokenizer files ship with this package (the public files, unchanged),
  so those two ids load offline; any other id or folder goes through ``AutoTokenizer``.
* The paper ran transformers 4.42.3, whose ``decode`` applied ``clean_up_tokenization`` (" ." -> ".",
  " 's" -> "'s", ...) whenever the tokenizer config did not switch it off. transformers 5 ignores the
  flag for BPE tokenizers, so ``decode_like_paper`` applies that clean-up itself.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Optional

BUNDLED_DIR = Path(__file__).parent / "assets" / "tokenizers"
# hub id -> folder under assets/tokenizers
BUNDLED = {
    "gpt2": "gpt2",
    "openai-community/gpt2": "gpt2",
    "EleutherAI/gpt-neox-20b": "gpt-neox-20b",
}
# hub organisation -> tokenizer the paper's harness used for its checkpoints (§5.3)
FAMILY_DEFAULTS = {
    "hazyresearch": "gpt2",
    "state-spaces": "EleutherAI/gpt-neox-20b",
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

# transformers 4.42.3 `PreTrainedTokenizerBase.clean_up_tokenization`, applied in this order.
_PAPER_CLEANUP = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
    (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)


class TokenizerError(ValueError):
    pass


def family_default_tokenizer(pretrained: str) -> Optional[str]:
    """Tokenizer the paper used for a checkpoint id or folder, when the checkpoint has none of its own."""
    path = Path(str(pretrained))
    if path.is_dir():
        if any((path / f).is_file() for f in _TOKENIZER_FILES):
            return str(path)
        cfg = path / "config.json"
        if cfg.is_file():
            return _tokenizer_for_config(json.loads(cfg.read_text()))
        return None
    org = str(pretrained).split("/")[0]
    return FAMILY_DEFAULTS.get(org)


def _tokenizer_for_config(cfg: dict) -> Optional[str]:
    """Folders without tokenizer files: hazyresearch configs are GPT2Config-shaped (n_embd, ...)."""
    if "n_embd" in cfg or cfg.get("model_type") == "gpt2" or "mixer" in cfg:
        return "gpt2"
    if "d_model" in cfg and "ssm_cfg" in cfg:  # mamba_ssm format (state-spaces): GPT-NeoX vocabulary
        return "EleutherAI/gpt-neox-20b"
    return None


def resolve_tokenizer_name(tokenizer: Optional[str] = None, pretrained: Optional[str] = None) -> str:
    """The tokenizer of the evaluated model: explicit ``tokenizer``, else the checkpoint's own/family default."""
    if tokenizer:
        return str(tokenizer)
    if pretrained:
        return family_default_tokenizer(str(pretrained)) or str(pretrained)
    raise TokenizerError(
        "no tokenizer: the jrt tasks cut documents with the evaluated model's tokenizer. Pass "
        "--model_args pretrained=... (or tokenizer=...), or turn cutting off with "
        "--metadata '{\"cutting_context\": false}'."
    )


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str):
    """A transformers tokenizer for a hub id or folder; bundled copies for gpt2 / gpt-neox-20b."""
    from transformers import AutoTokenizer

    source = str(BUNDLED_DIR / BUNDLED[name]) if name in BUNDLED else name
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise TokenizerError(f"could not load tokenizer {name!r}: {type(exc).__name__}: {exc}") from exc


def paper_cleanup_enabled(tokenizer) -> bool:
    """transformers 4.42.3's default: the config's clean_up_tokenization_spaces if set, else True."""
    return bool(getattr(tokenizer, "init_kwargs", {}).get("clean_up_tokenization_spaces", True))


def clean_up_tokenization(text: str) -> str:
    for old, new in _PAPER_CLEANUP:
        text = text.replace(old, new)
    return text


def decode_like_paper(tokenizer, ids, skip_special_tokens: bool = True) -> str:
    """``tokenizer.decode`` as transformers 4.42.3 did it (clean-up included), on any version."""
    text = tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)
    return clean_up_tokenization(text) if paper_cleanup_enabled(tokenizer) else text


def encode_like_paper(tokenizer, text: str) -> list:
    """Token ids with the tokenizer's default special tokens (REF: ``batch_encode_plus([text])``)."""
    return list(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])
