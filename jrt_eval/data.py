"""Loading the recall datasets (hub or local copies), validating records, cutting, building prompts.

Where records come from, in order:
1. ``jrt_data_dir`` in the task metadata (``--metadata '{"jrt_data_dir": "/data/jrt"}'``), else
2. the environment variable ``JRT_EVAL_DATA_DIR``, else
3. the Hugging Face hub (``datasets.load_dataset(<hub id>, <config>, split="validation")``).

A data dir holds one folder per dataset, named like the hub id (``hazyresearch/based-fda``) or by its
last part (``based-fda``); inside it, any ``validation*.jsonl|json|parquet`` file at any depth (so a
``huggingface-cli download --repo-type dataset ... --local-dir`` snapshot works as is). The special
value ``bundled`` points at the small schema-exact samples shipped with the package. A data dir that
lacks the dataset is an error (never a silent fall back to the hub).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .cutting import CLEAN, PAPER, PROTOCOLS, cut_text
from .prompting import LAYOUTS, RELEASED, build_prompt
from .specs import DATASETS, DatasetSpec
from .tokenization import load_tokenizer, resolve_tokenizer_name

log = logging.getLogger("jrt_eval")

BUNDLED_SAMPLES = Path(__file__).parent / "assets" / "samples"
DATA_DIR_ENV = "JRT_EVAL_DATA_DIR"
_EXTENSIONS = (".jsonl", ".json", ".parquet")


class DataError(ValueError):
    pass


# ------------------------------------------------------------------------------------------ loading

def resolve_data_dir(data_dir: Optional[str]) -> Optional[Path]:
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        return None
    if str(data_dir) == "bundled":
        return BUNDLED_SAMPLES
    path = Path(os.path.expanduser(str(data_dir)))
    if not path.is_dir():
        raise DataError(f"data dir {str(path)!r} does not exist (from jrt_data_dir / ${DATA_DIR_ENV})")
    return path


def local_files(spec: DatasetSpec, root: Path) -> list:
    org, name = spec.hub_path.split("/")
    tried = [root / org / name, root / name, root / f"{org}__{name}"]
    for folder in tried:
        if folder.is_dir():
            files = sorted(
                p for p in folder.rglob(f"{spec.split}*")
                if p.is_file() and p.suffix in _EXTENSIONS and ".cache" not in p.parts
            )
            if not files:
                raise DataError(f"{folder} has no {spec.split}*.jsonl/.json/.parquet file for {spec.hub_path}")
            return files
    raise DataError(f"{spec.hub_path} not found in data dir {root} (looked for: {', '.join(map(str, tried))})")


def _read_records(path: Path) -> list:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records")
    return data


def load_records(spec: DatasetSpec, data_dir: Optional[str] = None, revision: Optional[str] = None) -> list:
    """All records of the spec's split as dicts, in file order."""
    root = resolve_data_dir(data_dir)
    if root is not None:
        records = []
        for path in local_files(spec, root):
            records.extend(_read_records(path))
        return records
    try:
        import datasets

        ds = datasets.load_dataset(spec.hub_path, spec.hub_name, split=spec.split, revision=revision)
    except Exception as exc:
        raise DataError(
            f"could not load {spec.hub_path} ({spec.split}) from the Hugging Face hub: "
            f"{type(exc).__name__}: {exc}. Offline? Point ${DATA_DIR_ENV} (or --metadata jrt_data_dir) "
            "at a folder of local copies; see the README."
        ) from exc
    return list(ds)


def validate(spec: DatasetSpec, records: list, form: str) -> None:
    """Every field the prompt and the cut read must be there with the right type; contexts non-empty."""
    if not records:
        raise DataError(f"{spec.hub_path}: no records")
    needed = spec.fields + (spec.twice_fields if form == "twice" else ())
    problems = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            problems.append(f"record {i}: not a mapping")
            continue
        for key in needed:
            if key not in rec or rec[key] is None:
                problems.append(f"record {i}: missing field {key!r}")
            elif key == "answers":
                ok = isinstance(rec[key], list) and rec[key] and all(isinstance(a, str) for a in rec[key])
                if not ok:
                    problems.append(f"record {i}: 'answers' must be a non-empty list of strings")
            elif not isinstance(rec[key], str):
                problems.append(f"record {i}: field {key!r} must be a string, got {type(rec[key]).__name__}")
        ctx = rec.get(spec.context_key)
        if isinstance(ctx, str) and not ctx.strip():
            problems.append(f"record {i}: empty context ({spec.context_key!r})")
        if len(problems) >= 10:
            break
    if problems:
        raise DataError(f"{spec.hub_path}: malformed records: " + "; ".join(problems[:10]))


# ------------------------------------------------------------------------------------ task building

@dataclass
class TaskOptions:
    """Options a run passes through lm-eval's task metadata (``--metadata`` JSON or ``--model_args``)."""

    cutting_context: bool = True
    context_length: int = 1000
    answer_length: int = 50
    layout: str = RELEASED
    repeats: int = 2
    protocol: str = PAPER
    data_dir: Optional[str] = None
    revision: Optional[str] = None
    tokenizer: Optional[str] = None  # resolved tokenizer name (model's own)

    @classmethod
    def from_metadata(cls, meta: dict) -> "TaskOptions":
        def as_bool(v):
            return v if isinstance(v, bool) else str(v).strip().lower() in ("1", "true", "yes", "on")

        opts = cls(
            cutting_context=as_bool(meta.get("cutting_context", True)),
            context_length=int(meta.get("context_length", 1000)),
            answer_length=int(meta.get("answer_length", 50)),
            layout=str(meta.get("jrt_layout", RELEASED)),
            repeats=int(meta.get("jrt_repeats", 2)),
            protocol=str(meta.get("jrt_protocol", PAPER)),
            data_dir=meta.get("jrt_data_dir"),
            revision=meta.get("jrt_revision"),
        )
        if opts.layout not in LAYOUTS:
            raise ValueError(f"jrt_layout must be one of {LAYOUTS}, got {opts.layout!r}")
        if opts.protocol not in PROTOCOLS:
            raise ValueError(f"jrt_protocol must be one of {PROTOCOLS}, got {opts.protocol!r}")
        if opts.repeats < 1:
            raise ValueError(f"jrt_repeats must be >= 1, got {opts.repeats}")
        if opts.cutting_context:
            opts.tokenizer = resolve_tokenizer_name(meta.get("tokenizer"), meta.get("pretrained"))
        return opts


@dataclass
class BuildStats:
    total: int = 0
    dropped_short_answer: int = 0
    answer_not_found: int = 0

    @property
    def scored(self) -> int:
        return self.total - self.dropped_short_answer


def labels_of(spec: DatasetSpec, doc: dict) -> list:
    return list(doc["answers"]) if spec.labels_are_list else [doc["value"]]


def target_of(spec: DatasetSpec, doc: dict) -> str:
    """REF's doc_to_target (logged only): the value, or " " + first answer."""
    if not spec.labels_are_list:
        return doc["value"]
    return " " + (doc["answers"][0] if doc["answers"] else "unanswerable")


def build_records(dataset: str, form: str, records: list, opts: TaskOptions, tokenizer=None):
    """Cut every record (unless cutting is off) and attach its prompt, labels and target."""
    spec = DATASETS[dataset]
    validate(spec, records, form)
    stats = BuildStats(total=len(records))
    out = []
    for rec in records:
        doc = dict(rec)
        if opts.cutting_context:
            cut = cut_text(doc, doc[spec.context_key], spec.answer_keys, tokenizer,
                           opts.context_length, opts.answer_length, opts.protocol)
            if cut is None:
                stats.dropped_short_answer += 1
                continue
            doc[spec.context_key], window = cut
            stats.answer_not_found += not window.found
            if spec.kind == "squad" and form == "twice" and opts.protocol == CLEAN:
                # clean protocol: the first copy (the passage before "Question:") gets the same window
                passage = doc["context"].split("Question:")[0]
                first = cut_text(doc, passage, spec.answer_keys, tokenizer,
                                 opts.context_length, opts.answer_length, opts.protocol)
                doc["context"] = first[0] if first else passage
        doc["jrt_prompt"] = build_prompt(spec.kind, doc, form, opts.repeats, opts.layout, opts.protocol)
        doc["jrt_labels"] = labels_of(spec, doc)
        doc["jrt_target"] = target_of(spec, doc)
        out.append(doc)
    if not out:
        raise DataError(f"{spec.hub_path}: every record was dropped (answers of <= 1 character)")
    return out, stats


def load_task_dataset(jrt_dataset: str, jrt_form: str, **metadata):
    """``custom_dataset`` hook of every jrt task YAML: returns {"validation": Dataset}.

    lm-eval calls it with the task metadata, into which it merges ``--model_args`` and
    ``--metadata``; so ``pretrained`` / ``tokenizer`` name the evaluated model's tokenizer.
    """
    import datasets

    if jrt_dataset not in DATASETS:
        raise DataError(f"unknown jrt dataset {jrt_dataset!r}; known: {', '.join(DATASETS)}")
    opts = TaskOptions.from_metadata(metadata)
    spec = DATASETS[jrt_dataset]
    tokenizer = load_tokenizer(opts.tokenizer) if opts.cutting_context else None
    records = load_records(spec, opts.data_dir, opts.revision)
    docs, stats = build_records(jrt_dataset, jrt_form, records, opts, tokenizer)
    log.warning(
        "jrt %s/%s: %d records, %d scored, %d dropped (answer <= 1 char), %d answers not found in the "
        "document; cutting=%s (context_length=%d, answer_length=%d, tokenizer=%s), protocol=%s%s",
        jrt_dataset, jrt_form, stats.total, stats.scored, stats.dropped_short_answer, stats.answer_not_found,
        opts.cutting_context, opts.context_length, opts.answer_length, opts.tokenizer, opts.protocol,
        f", layout={opts.layout}, repeats={opts.repeats}" if jrt_form == "twice" else "",
    )
    return datasets.DatasetDict({spec.split: datasets.Dataset.from_list(docs)})
