"""Tiny random checkpoints of every family, written in the published formats by the family modules.

They make the whole pipeline runnable offline (tests, the CI regression set, the demo): same files,
same loaders as the real hub checkpoints, just a few layers of width 64. Built deterministically from
a seed, cached under ``$JRT_EVAL_CACHE`` (default ``~/.cache/jrt-eval``).

    python -m jrt_eval.tiny based /tmp/tiny-based      # write one
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Optional

# name -> (family module, keyword arguments of its write_tiny_checkpoint)
TINY = {
    "based": ("hazy_gpt", {"family": "based"}),
    "jrt_rnn": ("hazy_gpt", {"family": "jrt_rnn"}),
    "attn": ("hazy_gpt", {"family": "attn"}),
    "mamba": ("mamba", {}),
    "mamba2": ("mamba2", {}),
    "gla": ("gla", {}),
}
FORMAT_VERSION = "1"  # bump when a writer changes, so cached checkpoints are rebuilt


def cache_root() -> Path:
    return Path(os.environ.get("JRT_EVAL_CACHE", Path.home() / ".cache" / "jrt-eval"))


def write(name: str, out_dir, seed: int = 0) -> Path:
    if name not in TINY:
        raise ValueError(f"unknown tiny checkpoint {name!r}; known: {', '.join(TINY)}")
    module, kwargs = TINY[name]
    writer = importlib.import_module(f"jrt_eval.model_adapters.{module}").write_tiny_checkpoint
    return Path(writer(Path(out_dir), seed=seed, **kwargs))


def tiny_checkpoint(name: str, seed: int = 0, root: Optional[Path] = None) -> Path:
    """Folder of the tiny ``name`` checkpoint, written on first use (atomic: a half-written one is never used)."""
    folder = Path(root or cache_root()) / f"tiny-{name}-s{seed}-v{FORMAT_VERSION}"
    if (folder / "config.json").is_file():
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    write(name, tmp, seed)
    try:
        tmp.rename(folder)
    except OSError:  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m jrt_eval.tiny <family> <out_dir>")
    print(write(sys.argv[1], sys.argv[2]))
