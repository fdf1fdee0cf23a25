import json
import os
import sys
from pathlib import Path

import pytest

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "tests"))  # ref_oracle


def shared_path(*parts) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is optional for the package, needed by this test)")
    return path


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    from jrt_eval.tokenization import load_tokenizer

    return load_tokenizer("gpt2")


@pytest.fixture(scope="session")
def neox_tokenizer():
    from jrt_eval.tokenization import load_tokenizer

    return load_tokenizer("EleutherAI/gpt-neox-20b")


@pytest.fixture(scope="session")
def bundled_records():
    """{hub id: [records]} of the bundled samples."""
    from jrt_eval.data import BUNDLED_SAMPLES

    out = {}
    for path in sorted(BUNDLED_SAMPLES.glob("*/*/validation.jsonl")):
        hub_id = f"{path.parent.parent.name}/{path.parent.name}"
        out[hub_id] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


@pytest.fixture(scope="session")
def tiny_hf_gpt2(tmp_path_factory):
    """A tiny random transformers GPT-2 with the real GPT-2 tokenizer: a stock `hf` model for lm-eval runs."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from jrt_eval.tokenization import load_tokenizer

    out = tmp_path_factory.mktemp("tiny_hf_gpt2")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=4096)).save_pretrained(out)
    load_tokenizer("gpt2").save_pretrained(out)
    return out
