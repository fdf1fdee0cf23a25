"""Find a checkpoint's files: a local folder as is, else a Hugging Face hub snapshot."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Files a family loader may need; anything else in a hub repo (optimizer states, other formats) is skipped.
CHECKPOINT_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "tokenizer*",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
]


def download_patterns(remote_files) -> list:
    """The files of a hub repo to fetch: :data:`CHECKPOINT_PATTERNS`, less the pickled weights when the repo also
    holds the safetensors that :func:`read_state_dict` prefers (``-hf`` conversions often carry both: a second
    copy of the weights, gigabytes for the 1B+ checkpoints)."""
    preferred, pickled = WEIGHT_FILES
    if {preferred, f"{preferred}.index.json"} & set(remote_files):
        return [p for p in CHECKPOINT_PATTERNS if not p.startswith(pickled.split(".")[0])]
    return list(CHECKPOINT_PATTERNS)


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, read, or that does not match what its family expects."""


def checkpoint_dir(pretrained: str, revision: Optional[str] = None) -> Path:
    """Local folder for ``pretrained`` (a path, or a hub id downloaded into the HF cache)."""
    path = Path(os.path.expanduser(str(pretrained)))
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{pretrained!r} is a file; pass the checkpoint folder (config.json + weights)")
    if str(pretrained).count("/") != 1 or str(pretrained).startswith((".", "/", "~")):
        raise CheckpointError(f"checkpoint {pretrained!r} is neither a local folder nor a hub id like 'org/name'")
    try:
        from huggingface_hub import HfApi, snapshot_download

        try:
            remote = HfApi().list_repo_files(str(pretrained), revision=revision)
        except Exception:  # offline (a cached snapshot still resolves below) or no listing: every pattern
            remote = ()
        return Path(snapshot_download(str(pretrained), revision=revision, allow_patterns=download_patterns(remote)))
    except Exception as exc:  # offline, unknown repo, gated repo, ...
        raise CheckpointError(
            f"could not fetch {pretrained!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "Offline? Download it elsewhere (huggingface-cli download ...) and pass the local folder."
        ) from exc


def read_config(folder: Path) -> dict:
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"{folder} has no config.json")
    try:
        return json.loads(cfg.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg} is not valid JSON: {exc}") from exc


def override_config(cfg: dict, overrides: dict) -> dict:
    """``cfg`` with ``overrides`` applied; a dict value merges one level into a dict entry (e.g. a mixer's kwargs)."""
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


def read_state_dict(folder: Path) -> dict:
    """Load weights from model.safetensors (preferred) or pytorch_model.bin, sharded or not, on CPU."""
    import torch

    for name in WEIGHT_FILES:
        index = folder / f"{name}.index.json"
        files = (
            sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
            if index.is_file()
            else [folder / name] if (folder / name).is_file() else []
        )
        if not files:
            continue
        state = {}
        for f in files:
            try:
                if f.suffix == ".safetensors":
                    from safetensors.torch import load_file

                    state.update(load_file(str(f), device="cpu"))
                else:
                    # REF's pickles also hold int64 metric counters (torch.LongStorage): weights_only is fine.
                    state.update(torch.load(str(f), map_location="cpu", weights_only=True))
            except Exception as exc:
                raise CheckpointError(f"could not read weights {f}: {type(exc).__name__}: {exc}") from exc
        return state
    raise CheckpointError(f"{folder} holds no weights ({' or '.join(WEIGHT_FILES)})")


def check_keys(expected: set, got: set, what: str) -> None:
    """Fail with the names of missing and unexpected keys (strict loading, readable message)."""
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing or unexpected:
        def show(keys):
            return ", ".join(keys[:8]) + (f" … (+{len(keys) - 8})" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {show(unexpected)}")
        raise CheckpointError(f"{what}: weights do not match the model ({'; '.join(parts)})")
