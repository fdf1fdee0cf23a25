"""Tokenizer resolution (family defaults, bundled copies) and the bundled files' identity."""
import json

import pytest
from conftest import shared_path

from jrt_eval.tokenization import (
    BUNDLED_DIR,
    TokenizerError,
    family_default_tokenizer,
    load_tokenizer,
    resolve_tokenizer_name,
)


def test_bundled_tokenizers_are_the_public_files():
    for folder, ids in {"gpt2": {"Ġthe": 262, "<|endoftext|>": 50256}, "gpt-neox-20b": {"Ġthe": 253}}.items():
        shared = shared_path("tokenizers", folder, "tokenizer.json")
        assert json.loads((BUNDLED_DIR / folder / "tokenizer.json").read_text()) == json.loads(shared.read_text())
        tok = load_tokenizer({"gpt2": "gpt2", "gpt-neox-20b": "EleutherAI/gpt-neox-20b"}[folder])
        for piece, idx in ids.items():
            assert tok.convert_tokens_to_ids(piece) == idx
    assert len(load_tokenizer("gpt2")) == 50257


def test_family_defaults():
    assert resolve_tokenizer_name(pretrained="hazyresearch/based-360m") == "gpt2"
    assert resolve_tokenizer_name(pretrained="hazyresearch/JRT-1B-50B") == "gpt2"
    assert resolve_tokenizer_name(pretrained="state-spaces/mamba2-130m") == "EleutherAI/gpt-neox-20b"
    assert resolve_tokenizer_name(pretrained="fla-hub/gla-1.3B-100B") == "fla-hub/gla-1.3B-100B"
    assert resolve_tokenizer_name("my/tok", pretrained="hazyresearch/based-360m") == "my/tok"
    with pytest.raises(TokenizerError, match="cutting_context"):
        resolve_tokenizer_name()


def test_local_folders(tmp_path):
    hazy = tmp_path / "hazy"
    hazy.mkdir()
    (hazy / "config.json").write_text(json.dumps({"n_embd": 64, "mixer": {"_target_": "x"}}))
    assert family_default_tokenizer(str(hazy)) == "gpt2"
    ssm = tmp_path / "ssm"
    ssm.mkdir()
    (ssm / "config.json").write_text(json.dumps({"d_model": 64, "ssm_cfg": {}}))
    assert family_default_tokenizer(str(ssm)) == "EleutherAI/gpt-neox-20b"
    own = tmp_path / "own"
    own.mkdir()
    (own / "config.json").write_text("{}")
    (own / "tokenizer.json").write_text("{}")
    assert family_default_tokenizer(str(own)) == str(own)


def test_unloadable_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="could not load tokenizer"):
        load_tokenizer(str(tmp_path / "nowhere"))
