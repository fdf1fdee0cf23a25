"""`jrt-eval sweep`: every (model, task) cell of a model list through lm-eval, resumable, one worker per GPU.

    jrt-eval sweep --models paper-table1 --out results/table1            # the paper's Table 1
    jrt-eval sweep --models small --out results/ci-small                 # tiny offline checkpoints (CI)
    jrt-eval sweep --models state-spaces/mamba-130m,./my-ckpt --tasks jrt_all --out results/mine
    jrt-eval sweep --models paper-table1 --ray-address auto --out results/table1   # over a Ray cluster
    jrt-eval sweep --list                                                 # the model list and sets

A *cell* is one model on one lm-eval task (``jrt_swde`` and ``jrt_swde_twice`` are two cells), run with
lm-eval's Python API in a worker subprocess: one worker per GPU (``CUDA_VISIBLE_DEVICES`` pins it), or
``--workers`` CPU workers when there is no GPU. A worker keeps its model loaded across the cells of that
model, so each checkpoint loads once per worker. Each cell writes, under ``<out>/cells/<model>/<task>[@label]/``:

* ``results.json``: lm-eval's results dict plus our ``jrt_cell`` block (model, task, options, status,
  error, batch sizes tried, timings, versions, config hash), written last and atomically;
* ``samples.jsonl``: lm-eval's per-document samples (prompt, generation, ``contains``);
* ``log.txt``: everything the worker printed while running the cell.

A cell is *done* when its results.json parses, says ``status: ok``, carries the hash of the cell's
current configuration, and its samples.jsonl has as many lines as lm-eval scored. Anything else (no
file, a failed or interrupted cell, a file from another configuration, a corrupt or truncated file)
is run again; corrupt files are moved aside as ``results.json.corrupt``, never trusted. So a sweep
killed at any point (Ctrl-C, OOM, node loss) loses at most its cells in flight: run the same command
again to resume. A cell that fails is recorded with its error and the sweep goes on; a CUDA
out-of-memory error retries the cell with half the batch size, down to 1.

At the end the sweep writes ``leaderboard.csv``, ``summary.csv``/``summary.md`` and
``leaderboard.png`` (see ``jrt_eval.leaderboard``). Exit status: 0 all cells done, 1 some cells
failed, 2 bad input, 130 interrupted.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import difflib
import hashlib
import json
import os
import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

MODELS_FILE = Path(__file__).with_name("models.yaml")
GROUPS_DIR = Path(__file__).parent / "tasks" / "groups"
CELLS = "cells"
RESULTS, SAMPLES, LOG = "results.json", "samples.jsonl", "log.txt"
MANIFEST = "sweep.json"
EVENTS = "events.jsonl"
SCHEMA = 1
DEFAULT_TASKS = ("jrt_table1", "jrt_table1_twice")
DEFAULT_BATCH_SIZE = 8  # when neither --batch-size, the model nor its set says (REF: 32 for Table 1, 8 for Table 2)
TASK_ALIASES = {"nq": "nq_1024"}  # jrt_nq / jrt_nq_twice read based_nq_1024
# Options that decide what a cell computes (part of its hash); batch size and device do not.
_EXEC_ONLY_ARGS = {"batch_size", "max_batch_size", "device"}


class UsageError(ValueError):
    """Bad input from the user: unknown model or set, bad task name, unreachable Ray address, ..."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text.replace("/", "__")).strip("_") or "model"


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ============================================================================ model list and sets

@dataclass
class ModelEntry:
    key: str  # row label and folder name
    id: str  # hub id, local folder, tiny:<name>, or hf:<id or folder>
    family: str = "jrt_auto"
    lm_eval_model: Optional[str] = None  # lm-eval model type; default: family
    tokenizer: Optional[str] = None
    params: str = ""
    train_tokens: str = ""
    paper: str = ""
    model_args: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    batch_size: Optional[int] = None

    @property
    def model_type(self) -> str:
        return self.lm_eval_model or self.family


@dataclass
class Run:
    tasks: list
    label: str = ""
    metadata: dict = field(default_factory=dict)


@dataclass
class ModelSet:
    name: str
    models: list
    runs: list  # [Run]
    metadata: dict = field(default_factory=dict)
    batch_size: Optional[int] = None
    skip_unavailable: bool = False
    description: str = ""


class Registry:
    def __init__(self, models: dict, sets: dict):
        self.models = models  # name -> ModelEntry
        self.sets = sets  # name -> ModelSet


_MODEL_KEYS = {"id", "family", "lm_eval_model", "tokenizer", "params", "train_tokens", "paper",
               "model_args", "metadata", "batch_size"}
_SET_KEYS = {"models", "tasks", "runs", "metadata", "batch_size", "skip_unavailable", "description"}


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read model list {path}: {exc}") from exc
    if not isinstance(data, dict) or not set(data) <= {"models", "sets"}:
        raise UsageError(f"{path}: expected a mapping with 'models' and/or 'sets'")
    return data


def load_registry(extra_files=()) -> Registry:
    """Our models.yaml, then each extra file on top (same layout; entries override ours by name)."""
    models, sets = {}, {}
    for path in [MODELS_FILE, *extra_files]:
        data = _read_yaml(Path(path))
        for name, raw in (data.get("models") or {}).items():
            if not isinstance(raw, dict) or "id" not in raw:
                raise UsageError(f"{path}: model {name!r} needs at least an 'id'")
            unknown = set(raw) - _MODEL_KEYS
            if unknown:
                raise UsageError(f"{path}: model {name!r} has unknown keys {sorted(unknown)}; known: {sorted(_MODEL_KEYS)}")
            if not re.fullmatch(r"[A-Za-z0-9._+-]+", str(name)):
                raise UsageError(f"{path}: model name {name!r} must be letters, digits and . _ + - only")
            models[str(name)] = ModelEntry(key=str(name), **{k: v for k, v in raw.items() if v is not None})
        for name, raw in (data.get("sets") or {}).items():
            if not isinstance(raw, dict) or not raw.get("models"):
                raise UsageError(f"{path}: set {name!r} needs a 'models' list")
            unknown = set(raw) - _SET_KEYS
            if unknown:
                raise UsageError(f"{path}: set {name!r} has unknown keys {sorted(unknown)}; known: {sorted(_SET_KEYS)}")
            if raw.get("runs"):
                runs = [Run(tasks=list(r["tasks"]), label=str(r.get("label", "")), metadata=dict(r.get("metadata") or {}))
                        for r in raw["runs"]]
            else:
                runs = [Run(tasks=list(raw.get("tasks") or DEFAULT_TASKS))]
            sets[str(name)] = ModelSet(
                name=str(name), models=list(raw["models"]), runs=runs, metadata=dict(raw.get("metadata") or {}),
                batch_size=raw.get("batch_size"), skip_unavailable=bool(raw.get("skip_unavailable", False)),
                description=str(raw.get("description", "")),
            )
    return Registry(models, sets)


# Tiny stock-transformers checkpoints (lm-eval's own `hf` model runs them), built offline from a seed.
TINY_HF = {"hf-gpt2": "gpt2", "hf-mamba": "EleutherAI/gpt-neox-20b"}


def _write_tiny_hf(name: str, out: Path, seed: int = 0) -> None:
    import torch

    from .tokenization import load_tokenizer

    tok = load_tokenizer(TINY_HF[name])
    torch.manual_seed(seed)
    if name == "hf-gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=4096))
    else:
        from transformers import MambaConfig, MambaForCausalLM

        model = MambaForCausalLM(MambaConfig(
            vocab_size=len(tok), hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
            eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id or 0))
    model.save_pretrained(out)
    tok.save_pretrained(out)


def tiny_available(name: str) -> tuple:
    """(True, "") if ``tiny:<name>`` can be built here, else (False, why)."""
    if name in TINY_HF:
        return True, ""
    from . import tiny

    if name not in tiny.TINY:
        return False, f"unknown tiny checkpoint {name!r}; known: {', '.join([*TINY_HF, *tiny.TINY])}"
    module = tiny.TINY[name][0]
    try:
        import importlib

        mod = importlib.import_module(f"jrt_eval.model_adapters.{module}")
    except ImportError as exc:
        return False, f"its family module jrt_eval.model_adapters.{module} is not importable ({exc})"
    if not hasattr(mod, "write_tiny_checkpoint"):
        return False, f"jrt_eval.model_adapters.{module} has no write_tiny_checkpoint yet"
    return True, ""


def resolve_pretrained(model_id: str) -> str:
    """The folder or hub id lm-eval loads for a model id (tiny:<name> is built on first use, cached)."""
    if model_id.startswith("tiny:"):
        name = model_id[len("tiny:"):]
        if name in TINY_HF:
            from .tiny import cache_root

            folder = cache_root() / f"tiny-{name}-s0"
            if not (folder / "config.json").is_file():
                tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
                _write_tiny_hf(name, tmp)
                try:
                    tmp.rename(folder)
                except OSError:  # another worker won the race
                    shutil.rmtree(tmp, ignore_errors=True)
            return str(folder)
        from .tiny import tiny_checkpoint

        return str(tiny_checkpoint(name))
    if model_id.startswith("hf:"):
        model_id = model_id[3:]
    path = Path(os.path.expanduser(model_id))
    return str(path.resolve()) if path.exists() else model_id


def _adhoc_entry(spec: str) -> Optional[ModelEntry]:
    """A model given by id or path on the command line (not in the list), or None if it is neither."""
    if spec.startswith("tiny:"):
        name = spec[5:]
        hf = name in TINY_HF
        return ModelEntry(key=_slug(f"tiny-{name}"), id=spec, family=name, lm_eval_model="hf" if hf else None)
    if spec.startswith("hf:"):
        target = spec[3:]
        path = Path(os.path.expanduser(target))
        if path.exists():
            target = str(path.resolve())
            key = f"{_slug(path.name)}-{hashlib.sha1(target.encode()).hexdigest()[:6]}"
        else:
            key = _slug(target)
        return ModelEntry(key=key, id=f"hf:{target}", family="hf", lm_eval_model="hf")
    path = Path(os.path.expanduser(spec))
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"model {spec!r} is a file; pass the checkpoint folder")
        full = str(path.resolve())
        return ModelEntry(key=f"{_slug(path.name)}-{hashlib.sha1(full.encode()).hexdigest()[:6]}", id=full)
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", spec):
        return ModelEntry(key=_slug(spec), id=spec)  # hub id: jrt_auto reads its config.json
    return None


def resolve_models(specs: list, registry: Registry) -> list:
    """[(ModelEntry, ModelSet or None)] for --models items: set names, list names, ids, paths, tiny:/hf:."""
    out, seen = [], set()
    by_id = {m.id: m for m in registry.models.values()}

    def add(entry, origin):
        if entry.key not in seen:
            seen.add(entry.key)
            out.append((entry, origin))

    for spec in specs:
        if spec in registry.sets:
            s = registry.sets[spec]
            for name in s.models:
                entry = registry.models.get(name) or by_id.get(name) or _adhoc_entry(name)
                if entry is None:
                    raise UsageError(f"set {spec!r} names unknown model {name!r}")
                if s.skip_unavailable and entry.id.startswith("tiny:"):
                    ok, why = tiny_available(entry.id[5:])
                    if not ok:
                        print(f"jrt-eval sweep: skipping {entry.key} from set {spec!r}: {why}", file=sys.stderr)
                        continue
                add(entry, s)
        elif spec in registry.models:
            add(registry.models[spec], None)
        elif spec in by_id:
            add(by_id[spec], None)
        else:
            entry = _adhoc_entry(spec)
            if entry is None:
                names = [*registry.sets, *registry.models]
                close = difflib.get_close_matches(spec, names, n=3, cutoff=0.6)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise UsageError(
                    f"unknown model or set {spec!r}: not a set, not a name in the model list, not an existing "
                    f"folder, not a hub id like org/name.{hint} Sets: {', '.join(registry.sets)}. "
                    "See `jrt-eval sweep --list`.")
            add(entry, None)
    if not out:
        raise UsageError("no models to run")
    return out


# ============================================================================ tasks

def _group_members() -> dict:
    import yaml

    groups = {}
    for path in sorted(GROUPS_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("group"):
            groups[data["group"]] = [t if isinstance(t, str) else t.get("task") for t in data.get("task", [])]
    return groups


def task_dataset_form(task: str) -> tuple:
    """(dataset, form) of a jrt task name: jrt_nq_512_twice -> ("nq_512", "twice")."""
    from .specs import DATASETS

    name = task[len("jrt_"):] if task.startswith("jrt_") else task
    form = "twice" if name.endswith("_twice") else "default"
    dataset = name[: -len("_twice")] if form == "twice" else name
    dataset = TASK_ALIASES.get(dataset, dataset)
    if not task.startswith("jrt_") or dataset not in DATASETS:
        raise UsageError(f"not a jrt task: {task!r}")
    return dataset, form


def expand_tasks(names) -> list:
    """Task names and jrt groups -> task names, in order, without repeats."""
    from .specs import all_task_names

    groups, known = _group_members(), set(all_task_names())
    out, slots = [], {}
    for name in names:
        name = name.strip()
        if not name:
            continue
        members = groups.get(name, [name])
        for task in members:
            if task in groups:
                members.extend(t for t in groups[task] if t not in members)
                continue
            if task not in known:
                close = difflib.get_close_matches(task, [*groups, *sorted(known)], n=3, cutoff=0.6)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise UsageError(f"unknown task or group {task!r}.{hint} Groups: {', '.join(groups)}; "
                                 f"tasks: {', '.join(sorted(known))}")
            if task in out:
                continue
            slot = task_dataset_form(task)
            if slot in slots:  # jrt_nq is jrt_nq_1024: run one of them, not both
                print(f"jrt-eval sweep: {task} reads the same data as {slots[slot]}; skipped", file=sys.stderr)
                continue
            slots[slot] = task
            out.append(task)
    if not out:
        raise UsageError("no tasks to run")
    return out


# ============================================================================ cells

@dataclass
class Cell:
    model: dict  # ModelEntry as a dict
    task: str
    dataset: str
    form: str
    label: str
    metadata: dict  # task options (lm-eval metadata), besides the model args lm-eval merges in
    model_args: dict  # without pretrained (resolved by the worker) and without batch size / device
    batch_size: int
    limit: Optional[float] = None

    @property
    def key(self) -> str:
        return f"{self.model['key']}/{self.task}" + (f"@{self.label}" if self.label else "")

    @property
    def rel_dir(self) -> str:
        return f"{CELLS}/{self.key}"

    @property
    def config(self) -> dict:
        """What the cell computes: its hash decides whether an existing result is still valid."""
        return {
            "model_id": self.model["id"], "lm_eval_model": self.model["lm_eval_model"] or self.model["family"],
            "model_args": {k: v for k, v in self.model_args.items() if k not in _EXEC_ONLY_ARGS},
            "task": self.task, "metadata": self.metadata, "limit": self.limit,
        }

    @property
    def config_hash(self) -> str:
        blob = json.dumps(self.config, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(key=self.key, rel_dir=self.rel_dir, config_hash=self.config_hash)
        return d


def plan_cells(resolved: list, tasks_override: Optional[list], metadata: dict, model_args: dict,
               batch_size: Optional[int], limit) -> list:
    """Cells for [(ModelEntry, ModelSet|None)]: set runs (or --tasks), metadata set < model < --metadata."""
    cells, where = [], {}
    for entry, origin in resolved:
        if tasks_override:
            runs = [Run(tasks=tasks_override)]
        elif origin is not None:
            runs = origin.runs
        else:
            runs = [Run(tasks=list(DEFAULT_TASKS))]
        for run in runs:
            for task in expand_tasks(run.tasks):
                dataset, form = task_dataset_form(task)
                meta = {**(origin.metadata if origin else {}), **run.metadata, **entry.metadata, **metadata}
                margs = {**entry.model_args, **model_args}
                if entry.tokenizer and "tokenizer" not in margs:
                    margs["tokenizer"] = entry.tokenizer
                bs = batch_size or entry.batch_size or (origin.batch_size if origin else None) or DEFAULT_BATCH_SIZE
                cell = Cell(model=asdict(entry), task=task, dataset=dataset, form=form, label=run.label,
                            metadata=meta, model_args=margs, batch_size=int(bs), limit=limit)
                if cell.key in where:
                    if where[cell.key].config_hash != cell.config_hash:
                        raise UsageError(f"two different configurations map to the same cell {cell.key}; "
                                         "give the runs distinct labels")
                    continue
                where[cell.key] = cell
                cells.append(cell)
    return cells


def read_cell(cell_dir: Path) -> tuple:
    """(state, results dict or None, reason). state: missing | corrupt | failed | ok."""
    path = Path(cell_dir) / RESULTS
    if not path.exists():
        return "missing", None, "no results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return "corrupt", None, f"results.json does not parse ({type(exc).__name__}: {exc})"
    info = data.get("jrt_cell") if isinstance(data, dict) else None
    if not isinstance(info, dict) or "config_hash" not in info or "task" not in info:
        return "corrupt", None, "results.json has no jrt_cell block"
    if info.get("status") != "ok":
        return "failed", data, info.get("error") or "failed"
    task = info["task"]
    try:
        score = data["results"][task]["contains,none"]
        n = int(data["n-samples"][task]["effective"])
    except (KeyError, TypeError, ValueError):
        return "corrupt", None, f"results.json has no contains score / n-samples for {task}"
    if not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
        return "corrupt", None, f"contains score {score!r} is not a fraction"
    samples = Path(cell_dir) / SAMPLES
    try:
        lines = [ln for ln in samples.read_text(encoding="utf-8").splitlines() if ln.strip()]
        for ln in lines:
            json.loads(ln)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return "corrupt", None, f"samples.jsonl unreadable ({type(exc).__name__})"
    if len(lines) != n:
        return "corrupt", None, f"samples.jsonl has {len(lines)} records, results.json says {n}"
    return "ok", data, ""


def cell_status(run_dir: Path, cell: Cell) -> tuple:
    """(state, reason) of a planned cell: done | todo | failed | corrupt | stale."""
    state, data, reason = read_cell(Path(run_dir) / cell.rel_dir)
    if state in ("missing", "corrupt"):
        return ("todo" if state == "missing" else "corrupt"), reason
    if data["jrt_cell"].get("config_hash") != cell.config_hash:
        return "stale", "results.json is from another configuration of this cell"
    return ("done", "") if state == "ok" else ("failed", reason)


def _set_aside(path: Path, suffix: str) -> None:
    if path.exists():
        os.replace(path, path.with_name(path.name + suffix))


# ============================================================================ worker (subprocess)

def _is_oom(exc: BaseException) -> bool:
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "cublas_status_alloc_failed" in text)


class CellOOM(RuntimeError):
    pass


def run_with_oom_retry(fn, batch_size: int, on_oom=None):
    """``fn(batch_size)``; on out-of-memory retry with half the batch (down to 1), then raise CellOOM.

    Returns (result, attempts, final batch size); attempts lists the batch sizes that ran out of memory.
    """
    bs, attempts = max(1, int(batch_size)), []
    while True:
        oom = None
        try:
            return fn(bs), attempts, bs
        except Exception as exc:  # noqa: BLE001
            if not _is_oom(exc):
                raise
            oom = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        # outside the except block, so the failed frames (and their tensors) are released
        attempts.append({"batch_size": bs, "error": oom})
        if on_oom is not None:
            on_oom()
        if bs <= 1:
            raise CellOOM(f"out of memory even at batch size 1 (tried {[a['batch_size'] for a in attempts]}): {oom}")
        bs = max(1, bs // 2)


class _WorkerState:
    """The lm-eval model of the previous cell, reused while the next cell asks for the same one."""

    def __init__(self):
        self.key, self.lm = None, None
        self.poisoned = False  # set after a CUDA error: this process should not run another cell

    def get_lm(self, model_type: str, model_args: dict, batch_size: int, device: str):
        from lm_eval.api.registry import get_model

        key = json.dumps([model_type, model_args, batch_size, device], sort_keys=True, default=str)
        if key != self.key:
            self.drop()
            self.lm = get_model(model_type).create_from_arg_obj(
                dict(model_args), {"batch_size": batch_size, "device": device})
            self.key = key
        return self.lm

    def drop(self):
        self.key, self.lm = None, None
        import gc

        gc.collect()
        if "torch" in sys.modules:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


class _RedirectFds:
    """Send fds 1 and 2 (Python's and C's output, tqdm, logging) to a file for the duration."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(self.fd, 1)
        os.dup2(self.fd, 2)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in (*self.saved, self.fd):
            os.close(fd)
        return False


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for dist, key in (("jrt-eval", "jrt_eval"), ("lm-eval", "lm_eval"), ("transformers", "transformers"),
                      ("torch", "torch")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    if out["jrt_eval"] is None:
        from . import __version__

        out["jrt_eval"] = __version__
    return out


def _device() -> str:
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _sanitize_samples(samples: list) -> list:
    """lm-eval's own shaping of samples for its samples_*.jsonl (EvaluationTracker.save_results_samples)."""
    from lm_eval.utils import sanitize_list

    out = []
    for s in samples:
        s = dict(s)
        s["arguments"] = {f"gen_args_{i}": {f"arg_{j}": a for j, a in enumerate(arg)}
                          for i, arg in enumerate(s.get("arguments", []))}
        s["resps"] = sanitize_list(s.get("resps", []))
        s["filtered_resps"] = sanitize_list(s.get("filtered_resps", []))
        s["target"] = str(s.get("target"))
        out.append(s)
    return out


def run_cell(cell: dict, out_dir: Path, state: _WorkerState) -> dict:
    """Run one cell in this process; writes samples.jsonl, log.txt, then results.json. Returns jrt_cell."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started, t0 = _now(), time.time()
    info = {
        "schema": SCHEMA, "cell": cell["key"], "config_hash": cell["config_hash"],
        "model": cell["model"], "task": cell["task"], "dataset": cell["dataset"], "form": cell["form"],
        "label": cell["label"], "metadata": cell["metadata"], "model_args": cell["model_args"],
        "limit": cell["limit"], "requested_batch_size": cell["batch_size"], "status": "failed", "error": None,
        "oom_attempts": [], "batch_size": None, "started": started, "host": socket.gethostname(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "versions": _versions(),
    }
    data, samples = {}, None
    with _RedirectFds(out_dir / LOG):
        print(f"jrt-eval sweep cell {cell['key']} (config {cell['config_hash']}) on {info['host']}, "
              f"CUDA_VISIBLE_DEVICES={info['cuda_visible_devices']}", flush=True)
        try:
            import lm_eval
            from lm_eval.tasks import TaskManager

            from .data import TaskOptions

            device = _device()
            info["device"] = device
            model_args = {"pretrained": resolve_pretrained(cell["model"]["id"]), **cell["model_args"]}
            info["pretrained"] = model_args["pretrained"]
            # lm-eval merges model args into task metadata only when it builds the TaskManager itself
            meta = {**model_args, **cell["metadata"]}
            try:
                info["options"] = {k: v for k, v in asdict(TaskOptions.from_metadata(meta)).items()}
            except Exception as exc:  # noqa: BLE001  (the task load reports it properly)
                info["options"] = {"error": str(exc)}
            model_type = cell["model"]["lm_eval_model"] or cell["model"]["family"]

            def evaluate(bs):
                lm = state.get_lm(model_type, model_args, bs, device)
                tm = TaskManager(include_defaults=False, metadata=meta)
                return lm_eval.simple_evaluate(
                    model=lm, tasks=[cell["task"]], task_manager=tm, limit=cell["limit"], log_samples=True,
                    batch_size=bs, device=device)

            data, info["oom_attempts"], info["batch_size"] = run_with_oom_retry(
                evaluate, cell["batch_size"], on_oom=state.drop)
            if not isinstance(data, dict) or cell["task"] not in data.get("results", {}):
                raise RuntimeError(f"lm-eval returned no results for {cell['task']}")
            score = data["results"][cell["task"]].get("contains,none")
            if not isinstance(score, (int, float)):
                raise RuntimeError(f"lm-eval returned no contains score for {cell['task']}: {data['results']}")
            samples = _sanitize_samples(data.pop("samples", {}).get(cell["task"], []))
            data["config"]["model"] = model_type
            data["config"]["model_args"] = model_args
            data["task_hashes"] = {cell["task"]: hashlib.sha256("".join(
                s.get("doc_hash", "") + s.get("prompt_hash", "") + s.get("target_hash", "") for s in samples
            ).encode()).hexdigest()}
            info["status"] = "ok"
            info["score"], info["n"] = float(score), int(data["n-samples"][cell["task"]]["effective"])
            print(f"jrt-eval sweep cell {cell['key']}: contains={score:.4f} over {info['n']} docs", flush=True)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001  (a failing cell never stops the sweep)
            if isinstance(exc, SystemExit) and exc.code in (None, 0):
                exc = RuntimeError("lm-eval exited")
            info["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            data, samples = {}, None
            state.drop()
            # a CUDA error other than OOM can leave the context unusable: let the sweep start a fresh worker
            state.poisoned = "CUDA error" in str(exc) or type(exc).__name__ == "AcceleratorError"
    info["finished"], info["seconds"] = _now(), round(time.time() - t0, 3)
    from lm_eval.utils import handle_non_serializable

    if samples is not None:
        atomic_write_text(out_dir / SAMPLES, "".join(
            json.dumps(s, default=handle_non_serializable, ensure_ascii=False) + "\n" for s in samples))
    data["jrt_cell"] = info
    atomic_write_text(out_dir / RESULTS, json.dumps(data, indent=2, default=handle_non_serializable,
                                                    ensure_ascii=False))
    return info


def _die_with_parent(parent_pid: int) -> None:
    """Linux: get SIGTERM when the sweep process (its spawning thread) dies, so no worker outlives it."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001
            pass
    if parent_pid and os.getppid() != parent_pid:
        os._exit(3)


def worker_main(argv=None) -> int:
    """Worker loop: one JSON command per stdin line ({"cell", "out_dir"} or {"quit"}), replies on --reply-fd."""
    ap = argparse.ArgumentParser(prog="jrt-eval sweep worker")
    ap.add_argument("--reply-fd", type=int, required=True)
    ap.add_argument("--parent-pid", type=int, default=0)
    args = ap.parse_args(argv)
    _die_with_parent(args.parent_pid)
    reply = os.fdopen(args.reply_fd, "w", buffering=1, encoding="utf-8")
    from jrt_eval import _autoload

    _autoload.activate()
    state = _WorkerState()
    try:
        while True:
            line = sys.stdin.readline()
            if not line:
                break
            msg = json.loads(line)
            if msg.get("quit"):
                break
            info = run_cell(msg["cell"], Path(msg["out_dir"]), state)
            reply.write(json.dumps({"cell": msg["cell"]["key"], "status": info["status"], "error": info["error"],
                                    "seconds": info["seconds"], "score": info.get("score"), "n": info.get("n"),
                                    "batch_size": info.get("batch_size"), "restart": state.poisoned}) + "\n")
            if state.poisoned:
                return 3  # the parent starts a new worker for the next cell
    except (KeyboardInterrupt, BrokenPipeError):
        return 130
    return 0


# ============================================================================ slots (where cells run)

class WorkerDied(RuntimeError):
    pass


class LocalWorker:
    """A worker subprocess on this host, pinned to one GPU (or none)."""

    def __init__(self, name: str, gpu: Optional[str], log_path: Path, env_extra: Optional[dict] = None):
        self.name, self.gpu, self.log_path = name, gpu, Path(log_path)
        self.proc = None
        self.env_extra = env_extra or {}

    def start(self):
        env = dict(os.environ)
        env.update(self.env_extra)
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        r, w = os.pipe()
        cmd = [sys.executable, "-c", "import sys; from jrt_eval.sweep import worker_main; sys.exit(worker_main())",
               "--reply-fd", str(w), "--parent-pid", str(os.getpid())]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=log, env=env, pass_fds=(w,),
                                     text=True)
        os.close(w)
        log.close()
        self.reply = os.fdopen(r, "r", encoding="utf-8")

    def run(self, cell: Cell, out_dir: Path, timeout: Optional[float]) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            self.proc.stdin.write(json.dumps({"cell": cell.to_dict(), "out_dir": str(out_dir)}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerDied(f"worker {self.name} is gone ({exc})") from exc
        deadline = None if not timeout else time.time() + timeout
        while True:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.time()))
            ready, _, _ = select.select([self.reply], [], [], wait)
            if ready:
                line = self.reply.readline()
                if line:
                    reply = json.loads(line)
                    if reply.get("restart"):  # the worker exits after this cell; the next one gets a new worker
                        self.stop()
                    return reply
                code = self.proc.wait()
                self.proc = None
                raise WorkerDied(f"worker process died (exit code {code}) while running this cell; see log.txt")
            if deadline is not None and time.time() >= deadline:
                self.kill()
                raise WorkerDied(f"cell timed out after {timeout:.0f} s (--cell-timeout); worker killed")

    def stop(self, grace: float = 10.0):
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=grace)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            self.kill()
        self.proc = None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class _RayCellRunner:
    """Body of the Ray actor: a LocalWorker on the actor's node, writing into a temporary folder."""

    def __init__(self, name: str):
        self.tmp = Path(tempfile.mkdtemp(prefix="jrt-eval-ray-"))
        self.worker = LocalWorker(name, None, self.tmp / "worker.log")  # Ray already set CUDA_VISIBLE_DEVICES

    def run(self, cell_dict: dict, timeout: Optional[float]) -> dict:
        out = self.tmp / "cell"
        shutil.rmtree(out, ignore_errors=True)
        cell = Cell(**{k: cell_dict[k] for k in Cell.__dataclass_fields__})
        try:
            reply = self.worker.run(cell, out, timeout)
        except WorkerDied as exc:
            reply = {"status": "died", "error": str(exc)}
        files = {}
        for name in (SAMPLES, LOG, RESULTS):
            if (out / name).is_file():
                files[name] = (out / name).read_bytes()
        reply["host"] = socket.gethostname()
        return {"reply": reply, "files": files}

    def stop(self):
        self.worker.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return True


class RayWorker:
    """A Ray actor (one GPU each when the cluster has GPUs) running cells; files come back to the driver."""

    def __init__(self, name: str, actor_cls, num_gpus: float):
        self.name = name
        self.actor = actor_cls.options(num_gpus=num_gpus, num_cpus=0 if num_gpus else 1).remote(name)

    def run(self, cell: Cell, out_dir: Path, timeout: Optional[float]) -> dict:
        import ray

        try:
            res = ray.get(self.actor.run.remote(cell.to_dict(), timeout))
        except ray.exceptions.RayError as exc:  # actor or node lost
            raise WorkerDied(f"Ray worker {self.name} lost while running this cell: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in (SAMPLES, LOG):  # results.json last: it is what marks the cell done
            if name in res["files"]:
                if name == LOG:
                    (out_dir / name).write_bytes(res["files"][name])
                else:
                    atomic_write_text(out_dir / name, res["files"][name].decode("utf-8"))
        if RESULTS in res["files"]:
            atomic_write_text(out_dir / RESULTS, res["files"][RESULTS].decode("utf-8"))
        reply = res["reply"]
        if reply.get("status") == "died":
            raise WorkerDied(f"{reply['error']} (Ray node {reply.get('host')})")
        return reply

    def stop(self, grace: float = 10.0):
        import ray

        try:
            ray.get(self.actor.stop.remote(), timeout=grace)
        except Exception:  # noqa: BLE001
            pass
        self.kill()

    def kill(self):
        import ray

        try:
            ray.kill(self.actor)
        except Exception:  # noqa: BLE001
            pass


def _check_tcp(address: str, timeout: float = 5.0) -> None:
    host, _, port = address.rpartition(":")
    try:
        port = int(port)
    except ValueError:
        raise UsageError(f"--ray-address {address!r}: expected host:port, auto or local") from None
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout):
            pass
    except OSError as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {exc}. Is `ray start --head` running "
                         "there, and is the port open? (use --ray-address auto on a cluster node)") from None


def connect_ray(address: str):
    """ray.init for --ray-address (host:port, ray://host:port, auto, or local = a Ray instance on this host)."""
    try:
        import ray
    except ImportError:
        raise UsageError("--ray-address needs Ray: pip install 'jrt-eval[ray]'") from None
    if address not in ("auto", "local"):
        target = address[len("ray://"):] if address.startswith("ray://") else address
        _check_tcp(target)
    kwargs = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    if address == "local":
        kwargs["num_cpus"] = os.cpu_count()
    else:
        kwargs["address"] = address
    # Ray workers must import jrt_eval the way this process does (installed package on every node).
    try:
        ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"cannot connect to Ray at {address!r}: {type(exc).__name__}: {exc}") from None
    return ray


# ============================================================================ scheduler

class _Scheduler:
    """Hands out cells, preferring the model a worker already has loaded."""

    def __init__(self, cells: list):
        self.lock = threading.Lock()
        self.by_model = {}
        for c in cells:
            self.by_model.setdefault(c.model["key"], []).append(c)
        self.busy = {}  # model key -> workers on it

    def next(self, last_model: Optional[str]) -> Optional[Cell]:
        with self.lock:
            if last_model in self.by_model and self.by_model[last_model]:
                key = last_model
            else:
                free = [k for k, v in self.by_model.items() if v]
                if not free:
                    return None
                # a model nobody works on first (most cells left), else help the busiest queue
                key = min(free, key=lambda k: (self.busy.get(k, 0), -len(self.by_model[k])))
            if last_model is not None and last_model != key:
                self.busy[last_model] = max(0, self.busy.get(last_model, 0) - 1)
            if last_model != key:
                self.busy[key] = self.busy.get(key, 0) + 1
            return self.by_model[key].pop(0)


def _failed_record(cell: Cell, error: str) -> dict:
    return {"jrt_cell": {
        "schema": SCHEMA, "cell": cell.key, "config_hash": cell.config_hash, "model": cell.model, "task": cell.task,
        "dataset": cell.dataset, "form": cell.form, "label": cell.label, "metadata": cell.metadata,
        "model_args": cell.model_args, "limit": cell.limit, "requested_batch_size": cell.batch_size,
        "status": "failed", "error": error, "finished": _now(), "versions": _versions(),
    }}


def _slot_loop(worker, sched: _Scheduler, run_dir: Path, events: queue.Queue, stop: threading.Event,
               timeout: Optional[float]):
    last = None
    try:
        while not stop.is_set():
            cell = sched.next(last)
            if cell is None:
                break
            last = cell.model["key"]
            out_dir = run_dir / cell.rel_dir
            events.put(("start", worker.name, cell, None))
            t0 = time.time()
            try:
                reply = worker.run(cell, out_dir, timeout)
            except WorkerDied as exc:
                if stop.is_set():
                    break  # interrupted: the cell stays undone and reruns next time
                atomic_write_text(out_dir / RESULTS, json.dumps(_failed_record(cell, str(exc)), indent=2))
                reply = {"status": "failed", "error": str(exc)}
            reply["wall"] = time.time() - t0
            events.put(("done", worker.name, cell, reply))
    except Exception as exc:  # noqa: BLE001
        events.put(("crash", worker.name, None, {"error": f"{type(exc).__name__}: {exc}"}))
    finally:
        if stop.is_set():
            worker.kill()
        else:
            worker.stop()
        events.put(("exit", worker.name, None, None))


def detect_gpus() -> list:
    """GPU ids to pin workers to: CUDA_VISIBLE_DEVICES entries if set, else 0..n-1 (empty without CUDA)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        if not ids:
            return []
    else:
        ids = None
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        n = 0
    if n == 0:
        return []
    return (ids or [str(i) for i in range(n)])[:n]


# ============================================================================ command line

def _parse_json_arg(text: Optional[str], what: str) -> dict:
    if not text:
        return {}
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{what}: not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise UsageError(f"{what}: expected a JSON object")
        return value
    out = {}  # k=v,k=v like lm-eval's --model_args
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise UsageError(f"{what}: expected JSON or k=v,k=v, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jrt-eval sweep", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="comma list of sets, model names, hub ids, folders, tiny:<name>, hf:<id|folder>")
    ap.add_argument("--tasks", help="comma list of jrt tasks or groups (default: the set's, else jrt_table1,jrt_table1_twice)")
    ap.add_argument("--out", help="run folder (results/<run>); rerun with the same folder to resume")
    ap.add_argument("--model-list", action="append", default=[], metavar="FILE",
                    help="extra model list (YAML, layout of jrt_eval/models.yaml); may repeat")
    ap.add_argument("--metadata", help="task options for every cell, JSON (e.g. '{\"jrt_data_dir\": \"bundled\"}')")
    ap.add_argument("--model-args", help="extra model args for every model, JSON or k=v,k=v")
    ap.add_argument("--batch-size", type=int, help="batch size for every model (default: the model's, then its set's, then 8)")
    ap.add_argument("--limit", type=float, help="documents per task (testing only; part of the cell config)")
    ap.add_argument("--devices", default="auto",
                    help="auto (every visible GPU, else CPU), cpu, or GPU ids like 0,1: one worker each")
    ap.add_argument("--workers", type=int, help="CPU workers (default 1), or Ray actors (default: the cluster's GPUs)")
    ap.add_argument("--ray-address", help="run the cells on a Ray cluster: host:port, ray://host:port, auto, "
                                          "or local (a Ray instance on this host); needs jrt-eval[ray]")
    ap.add_argument("--cell-timeout", type=float, help="seconds before a running cell is killed and recorded failed")
    ap.add_argument("--force", action="store_true", help="rerun every cell, done or not")
    ap.add_argument("--skip-failed", action="store_true", help="do not rerun cells that failed before")
    ap.add_argument("--dry-run", action="store_true", help="print the cells and their state, run nothing")
    ap.add_argument("--no-leaderboard", action="store_true", help="skip the leaderboard and plot at the end")
    ap.add_argument("--no-plot", action="store_true", help="leaderboard CSVs but no PNG")
    ap.add_argument("--list", action="store_true", help="print the model list and sets, then exit")
    return ap


def _print_list(registry: Registry) -> None:
    print("sets:")
    for s in registry.sets.values():
        tasks = "; ".join(f"{r.label + ': ' if r.label else ''}{','.join(r.tasks)}" for r in s.runs)
        print(f"  {s.name:14s} {len(s.models):2d} models  tasks {tasks}\n                 {s.description}")
    print("models:")
    for m in registry.models.values():
        print(f"  {m.key:18s} {m.id:32s} {m.model_type:9s} {m.params:>5s} {m.train_tokens:>5s}  {m.paper}")


def _write_manifest(run_dir: Path, manifest: dict) -> None:
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))


def _lock_run(run_dir: Path):
    import fcntl

    f = open(run_dir / ".sweep.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise UsageError(f"another sweep is running in {run_dir} ({holder or 'unknown pid'}); "
                         "wait for it or use another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except UsageError as exc:
        print(f"jrt-eval sweep: error: {exc}", file=sys.stderr)
        return 2


def _main(args) -> int:
    registry = load_registry(args.model_list)
    if args.list:
        _print_list(registry)
        return 0
    if not args.models or not args.out:
        raise UsageError("--models and --out are required (see --help; --list shows the sets)")
    resolved = resolve_models([s.strip() for s in args.models.split(",") if s.strip()], registry)
    tasks = expand_tasks(args.tasks.split(",")) if args.tasks else None
    cells = plan_cells(resolved, tasks, _parse_json_arg(args.metadata, "--metadata"),
                       _parse_json_arg(args.model_args, "--model-args"), args.batch_size, args.limit)
    run_dir = Path(args.out)
    if args.dry_run:
        return _sweep(args, run_dir, resolved, cells)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_run(run_dir)
    try:
        return _sweep(args, run_dir, resolved, cells)
    finally:
        lock.close()


def _sweep(args, run_dir: Path, resolved: list, cells: list) -> int:
    todo, counts = [], {}
    for cell in cells:
        state, reason = ("todo", "--force") if args.force else cell_status(run_dir, cell)
        counts[state] = counts.get(state, 0) + 1
        if state == "done" or (state == "failed" and args.skip_failed):
            continue
        if state == "corrupt":
            print(f"jrt-eval sweep: {cell.key}: {reason}; not trusted, moved aside and rerun", file=sys.stderr)
        if not args.dry_run:
            d = run_dir / cell.rel_dir
            _set_aside(d / RESULTS, ".corrupt" if state == "corrupt" else ".old")
            for tmp in d.glob(".*.tmp") if d.is_dir() else []:
                tmp.unlink()
        todo.append(cell)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"jrt-eval sweep: {len(cells)} cells ({len(resolved)} models) in {run_dir}: {summary}; "
          f"{len(todo)} to run", file=sys.stderr)
    if args.dry_run:
        for cell in cells:
            state, reason = cell_status(run_dir, cell)
            print(f"{state:8s} {cell.key}  {json.dumps(cell.metadata, sort_keys=True)} {reason}")
        return 0

    workers, mode = _make_workers(args, run_dir) if todo else ([], "none")
    manifest = {
        "schema": SCHEMA, "argv": sys.argv, "args": vars(args), "started": _now(), "status": "running",
        "mode": mode, "workers": [w.name for w in workers], "versions": _versions(),
        "models": [asdict(m) for m, _ in resolved],
        "cells": [{"key": c.key, "dir": c.rel_dir, "config_hash": c.config_hash, "model": c.model["key"],
                   "task": c.task, "dataset": c.dataset, "form": c.form, "label": c.label} for c in cells],
        "to_run": len(todo),
    }
    _write_manifest(run_dir, manifest)
    t0 = time.time()
    status, results = "finished", {"ok": 0, "failed": 0}
    if todo:
        status, results = _run_cells(run_dir, todo, workers, args.cell_timeout, total=len(cells),
                                     already=len(cells) - len(todo))
    manifest.update(status=status, finished=_now(), wall_seconds=round(time.time() - t0, 3), ran=results)
    _write_manifest(run_dir, manifest)
    if args.ray_address and mode.startswith("ray"):
        import ray

        ray.shutdown()

    if not args.no_leaderboard:
        from . import leaderboard

        try:
            leaderboard.build(run_dir, plot=not args.no_plot, echo=True)
        except Exception as exc:  # noqa: BLE001  (results are safe on disk; `jrt-eval leaderboard` retries)
            print(f"jrt-eval sweep: leaderboard failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    failed = [c.key for c in cells if cell_status(run_dir, c)[0] != "done"]
    if status == "interrupted":
        print(f"jrt-eval sweep: interrupted; {len(cells) - len(failed)}/{len(cells)} cells done. Run the same "
              "command again to resume.", file=sys.stderr)
        return 130
    if failed:
        print(f"jrt-eval sweep: {len(failed)} of {len(cells)} cells not done: " + ", ".join(failed[:20])
              + (" ..." if len(failed) > 20 else "") + f" (errors in {run_dir}/{CELLS}/<cell>/results.json, log.txt)",
              file=sys.stderr)
        return 1
    print(f"jrt-eval sweep: all {len(cells)} cells done ({time.time() - t0:.1f} s) -> {run_dir}", file=sys.stderr)
    return 0


def _make_workers(args, run_dir: Path) -> tuple:
    if args.ray_address:
        ray = connect_ray(args.ray_address)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        n = args.workers or (gpus if gpus else 1)
        actor_cls = ray.remote(max_restarts=1, max_task_retries=0)(_RayCellRunner)
        per = 1 if gpus else 0
        return [RayWorker(f"ray{i}", actor_cls, per) for i in range(n)], f"ray ({args.ray_address}, {n} workers, " \
               f"{gpus} GPUs in cluster)"
    devices = args.devices.strip().lower()
    if devices == "auto":
        gpus = detect_gpus()
    elif devices == "cpu":
        gpus = []
    else:
        gpus = [d.strip() for d in args.devices.split(",") if d.strip()]
        if not detect_gpus():
            print(f"jrt-eval sweep: --devices {args.devices}: no CUDA GPU is visible here; the workers are pinned "
                  "as asked but run on CPU", file=sys.stderr)
    logs = run_dir / "logs"
    if gpus:
        if args.workers and args.workers != len(gpus):
            print(f"jrt-eval sweep: --workers ignored: one worker per GPU ({len(gpus)})", file=sys.stderr)
        return [LocalWorker(f"gpu{g}", g, logs / f"worker-gpu{g}.log") for g in gpus], f"local GPUs {','.join(gpus)}"
    n = max(1, args.workers or 1)
    threads = max(1, (os.cpu_count() or 1) // n)
    env = {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": str(threads)}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return [LocalWorker(f"cpu{i}", None, logs / f"worker-cpu{i}.log", env) for i in range(n)], f"local CPU x{n}"


def _run_cells(run_dir: Path, todo: list, workers: list, timeout, total: int, already: int) -> tuple:
    from tqdm import tqdm

    sched, events, stop = _Scheduler(todo), queue.Queue(), threading.Event()
    counts = {"ok": 0, "failed": 0}
    log = open(run_dir / EVENTS, "a", encoding="utf-8")

    def note(kind, worker, cell, extra):
        rec = {"time": _now(), "event": kind, "worker": worker}
        if cell is not None:
            rec["cell"] = cell.key
        if extra:
            rec.update({k: v for k, v in extra.items() if k != "error" or v})
        log.write(json.dumps(rec, default=str) + "\n")
        log.flush()

    threads = [threading.Thread(target=_slot_loop, args=(w, sched, run_dir, events, stop, timeout), daemon=True,
                                name=f"slot-{w.name}") for w in workers]
    bar = tqdm(total=total, initial=already, desc="cells", unit="cell", file=sys.stderr, dynamic_ncols=True)
    running = len(threads)
    status = "finished"
    for t in threads:
        t.start()
    try:
        while running:
            try:
                kind, wname, cell, extra = events.get(timeout=0.5)
            except queue.Empty:
                continue
            note(kind, wname, cell, extra)
            if kind == "exit":
                running -= 1
            elif kind == "crash":
                tqdm.write(f"jrt-eval sweep: worker {wname} stopped: {extra['error']}", file=sys.stderr)
            elif kind == "done":
                ok = extra.get("status") == "ok"
                counts["ok" if ok else "failed"] += 1
                bar.update(1)
                bar.set_postfix(ok=counts["ok"], failed=counts["failed"], refresh=False)
                if ok:
                    tqdm.write(f"[ok] {cell.key}: contains={extra.get('score', 0):.4f} n={extra.get('n')} "
                               f"bs={extra.get('batch_size')} ({extra['wall']:.1f} s, {wname})", file=sys.stderr)
                else:
                    tqdm.write(f"[FAILED] {cell.key}: {extra.get('error')}", file=sys.stderr)
    except KeyboardInterrupt:
        status = "interrupted"
        stop.set()
        tqdm.write("jrt-eval sweep: interrupted, stopping workers (cells in flight are lost)", file=sys.stderr)
        for w in workers:
            w.kill()
        for t in threads:
            t.join(timeout=15)
    finally:
        bar.close()
        log.close()
    return status, counts


if __name__ == "__main__":
    sys.exit(main())
