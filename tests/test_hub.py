"""Finding a checkpoint's files (model_adapters/hub.py): local folders, hub ids resolved from a Hugging Face cache
laid out as snapshot_download writes it (the hub itself is unreachable here), which weight files are fetched, and
reading sharded / pickled / broken weights."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from jrt_eval.model_adapters.hub import (CHECKPOINT_PATTERNS, CheckpointError, checkpoint_dir, download_patterns,
                                         read_state_dict)


def test_safetensors_repos_skip_the_pickled_copy():
    hf_repo = ["config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "README.md"]
    assert download_patterns(hf_repo) == [p for p in CHECKPOINT_PATTERNS if not p.startswith("pytorch_model")]
    sharded = ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors", "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin"]
    assert "pytorch_model*.bin" not in download_patterns(sharded)
    # only pickles (hazyresearch, state-spaces), another safetensors name, or no listing (offline): everything
    for files in (["config.json", "pytorch_model.bin"], ["config.json", "pytorch_model.bin", "adapter.safetensors"], ()):
        assert download_patterns(files) == CHECKPOINT_PATTERNS


def test_local_paths(tmp_path):
    assert checkpoint_dir(str(tmp_path)) == tmp_path
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is a file"):
        checkpoint_dir(str(tmp_path / "weights.bin"))
    with pytest.raises(CheckpointError, match="neither a local folder nor a hub id"):
        checkpoint_dir(str(tmp_path / "missing"))
    with pytest.raises(CheckpointError, match="Offline"):  # HF_HUB_OFFLINE=1 and nothing cached
        checkpoint_dir("nobody-here/no-such-model")


_RESOLVE = """
import json, sys
from jrt_eval.model_adapters.hub import checkpoint_dir
print(json.dumps(str(checkpoint_dir(sys.argv[1], revision=None if sys.argv[2] == '-' else sys.argv[2]))))
"""


def _resolve(cache, repo, revision="-"):
    """checkpoint_dir in a fresh interpreter: huggingface_hub reads HF_HUB_CACHE when it is imported."""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", _RESOLVE, repo, revision], capture_output=True, text=True,
                          env=env, timeout=120)


def test_hub_id_resolves_from_the_cache_offline(tmp_path):
    # the cache layout of huggingface_hub: models--org--name/{refs/<rev>, snapshots/<commit>/files}
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = tmp_path / "models--hazyresearch--based-360m"
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"n_embd": 64}))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    proc = _resolve(tmp_path, "hazyresearch/based-360m")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == str(snap)
    proc = _resolve(tmp_path, "hazyresearch/based-360m", "refs/pr/1")  # a revision that is not cached
    assert proc.returncode != 0 and "Offline?" in proc.stderr


def test_read_state_dict_formats(tmp_path):
    a, b = torch.randn(3, 2), torch.randn(4)
    with pytest.raises(CheckpointError, match="holds no weights"):
        read_state_dict(tmp_path)
    torch.save({"a": a, "b": b, "metrics.count": torch.tensor(3)}, tmp_path / "pytorch_model.bin")
    got = read_state_dict(tmp_path)
    assert set(got) == {"a", "b", "metrics.count"} and torch.equal(got["a"], a)
    # sharded safetensors win over the pickle
    save_file({"a": a}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"b": b}, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    got = read_state_dict(tmp_path)
    assert set(got) == {"a", "b"} and torch.equal(got["b"], b)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="could not read weights .*model-00002-of-00002"):
        read_state_dict(tmp_path)
