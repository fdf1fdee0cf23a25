"""`jrt-eval leaderboard <run>`: the tables of a sweep, rebuilt from its per-cell JSON results.

Reads ``<run>/cells/<model>/<task>[@label]/results.json`` (+ samples.jsonl) and writes, atomically:

* ``leaderboard.csv``: one row per (model, dataset, label) with the default and JRT-Prompt scores side
  by side (``contains`` as a fraction in [0, 1]), their delta, scored document counts (lm-eval's
  ``n-samples`` effective), context length, the paper's published numbers when the model id, dataset
  and context length match (``jrt_eval/paper_results.csv``, also as fractions), run settings, a digest
  of the generated outputs, and the jrt-eval / lm-eval / transformers / torch versions;
* ``summary.csv`` and ``summary.md``: one row per model (and label), datasets in the paper's column
  order FDA, SWDE, NQ, SQuAD, TriviaQA, DROP, then the average over datasets, in percent with one
  decimal like the paper's tables;
* ``leaderboard.png``: default vs JRT-Prompt per model and dataset (needs matplotlib: jrt-eval[plot]).

Corrupt or partial cell files are reported and left out, never trusted.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Optional

from .specs import TABLE1_DATASETS
from .sweep import CELLS, MANIFEST, SAMPLES, atomic_write_text, read_cell

PAPER_FILE = Path(__file__).with_name("paper_results.csv")
LEADERBOARD, SUMMARY_CSV, SUMMARY_MD, PLOT = "leaderboard.csv", "summary.csv", "summary.md", "leaderboard.png"
DATASET_ORDER = (*TABLE1_DATASETS, "nq_512", "nq_2048")
DISPLAY = {"fda": "FDA", "swde": "SWDE", "nq_1024": "NQ", "squad": "SQuAD", "triviaqa": "TriviaQA", "drop": "DROP",
           "nq_512": "NQ-512", "nq_2048": "NQ-2048"}
COLUMNS = [
    "model", "model_id", "family", "params", "train_tokens", "n_params", "dataset", "label", "context_length",
    "answer_length", "default_score", "jrt_score", "delta", "default_stderr", "jrt_stderr", "n_default", "n_jrt",
    "paper_default", "paper_jrt", "paper_delta", "default_task", "jrt_task", "status", "error", "tokenizer",
    "batch_size", "dtype", "protocol", "limit", "default_outputs_sha", "jrt_outputs_sha", "jrt_eval_version",
    "lm_eval_version", "transformers_version", "torch_version",
]
_DEFAULT_CONTEXT_LENGTH, _DEFAULT_ANSWER_LENGTH = 1000, 50


def _r(x: Optional[float], nd: int = 6):
    return None if x is None else round(float(x), nd)


def _outputs_digest(cell_dir: Path) -> str:
    """Digest of (doc, prompt, generation) over the cell's samples: changes iff a prompt or an output does."""
    recs = []
    for line in (cell_dir / SAMPLES).read_text(encoding="utf-8").splitlines():
        if line.strip():
            s = json.loads(line)
            recs.append(f"{s.get('doc_id')}\t{s.get('prompt_hash')}\t{json.dumps(s.get('filtered_resps'))}")
    return hashlib.sha256("\n".join(sorted(recs)).encode()).hexdigest()[:16]


def collect(run_dir) -> tuple:
    """(cells, problems): one dict per readable cell (ok or failed); problems = cells left out, with why."""
    run_dir = Path(run_dir)
    cells, problems = [], []
    for path in sorted((run_dir / CELLS).glob("*/*/results.json")):
        cell_dir = path.parent
        state, data, reason = read_cell(cell_dir)
        where = f"{cell_dir.parent.name}/{cell_dir.name}"
        if state == "corrupt":
            problems.append(f"{where}: {reason}")
            continue
        info = data["jrt_cell"]
        model = info.get("model") or {}
        rec = {
            "dir": where, "status": state, "error": info.get("error") or "", "model": model.get("key", cell_dir.parent.name),
            "model_id": model.get("id", ""), "family": model.get("family", ""), "params": model.get("params", ""),
            "train_tokens": model.get("train_tokens", ""), "task": info.get("task"), "dataset": info.get("dataset"),
            "form": info.get("form"), "label": info.get("label") or "", "limit": info.get("limit"),
            "versions": info.get("versions") or {}, "batch_size": info.get("batch_size"),
        }
        meta = {**(info.get("metadata") or {}), **{k: v for k, v in (info.get("options") or {}).items() if v is not None}}
        rec["context_length"] = int(meta.get("context_length", _DEFAULT_CONTEXT_LENGTH))
        rec["answer_length"] = int(meta.get("answer_length", _DEFAULT_ANSWER_LENGTH))
        rec["protocol"] = meta.get("protocol") or meta.get("jrt_protocol") or "paper"
        rec["tokenizer"] = meta.get("tokenizer") or (info.get("model_args") or {}).get("tokenizer") or ""
        if state == "ok":
            task = info["task"]
            res = data["results"][task]
            cfg = data.get("config") or {}
            stderr = res.get("contains_stderr,none")
            rec.update(
                score=float(res["contains,none"]), stderr=stderr if isinstance(stderr, (int, float)) else None,
                n=int(data["n-samples"][task]["effective"]), n_params=cfg.get("model_num_parameters"),
                dtype=str(cfg.get("model_dtype", "")).replace("torch.", ""), outputs_sha=_outputs_digest(cell_dir),
            )
            if rec["family"] in ("jrt_auto", "") and cfg.get("jrt_family"):
                rec["family"] = cfg["jrt_family"]
            rec["tokenizer"] = cfg.get("jrt_tokenizer") or rec["tokenizer"]
        margs = ((data.get("config") or {}).get("model_args") or {}) if state == "ok" else {}
        pretrained = str(info.get("pretrained") or (margs.get("pretrained") if isinstance(margs, dict) else "") or "")
        if rec["tokenizer"] and rec["tokenizer"] == pretrained and Path(pretrained).is_absolute():
            rec["tokenizer"] = "(checkpoint's own)"  # a local folder: its path says nothing portable
        cells.append(rec)
    return cells, problems


def load_paper(path: Path = PAPER_FILE) -> list:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _paper_match(paper: list, model_id: str, dataset: str, context_length: int) -> Optional[dict]:
    if not model_id:
        return None
    exact, loose = None, None
    for p in paper:
        if p["model_id"] != model_id or p["dataset"] != dataset:
            continue
        allowed = [int(x) for x in p["context_length"].split("|") if x]
        if allowed == [context_length]:
            exact = exact or p
        elif context_length in allowed:
            loose = loose or p
    return exact or loose


def _pct_to_frac(text: str) -> Optional[float]:
    return round(float(text) / 100.0, 6) if text not in ("", None) else None


def _human(n) -> str:
    """3616448 -> "3.6M" (for models whose list entry gives no size)."""
    try:
        n = float(n)
    except (TypeError, ValueError):
        return ""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}".rstrip("0").rstrip(".") + unit
    return str(int(n))


def _joined(values) -> str:
    vals = [str(v) for v in dict.fromkeys(values) if v not in (None, "")]
    return "|".join(vals)


def _model_order(run_dir: Path, cells: list) -> list:
    order = []
    manifest = Path(run_dir) / MANIFEST
    if manifest.is_file():
        try:
            order = [m["key"] for m in json.loads(manifest.read_text(encoding="utf-8")).get("models", [])]
        except (json.JSONDecodeError, KeyError, TypeError):
            order = []
    for c in sorted(cells, key=lambda c: c["model"]):
        if c["model"] not in order:
            order.append(c["model"])
    return order


def make_rows(cells: list, paper: Optional[list] = None, model_order: Optional[list] = None) -> list:
    """Leaderboard rows: one per (model, dataset, label), default and JRT-Prompt side by side."""
    paper = load_paper() if paper is None else paper
    groups = {}
    for c in cells:
        groups.setdefault((c["model"], c["dataset"], c["label"]), {}).setdefault(c["form"], c)
    order = {m: i for i, m in enumerate(model_order or sorted({c["model"] for c in cells}))}
    ds_rank = {d: i for i, d in enumerate(DATASET_ORDER)}
    rows = []
    for (model, dataset, label), forms in groups.items():
        d, j = forms.get("default"), forms.get("twice")
        first = d or j
        both = [c for c in (d, j) if c]
        row = dict.fromkeys(COLUMNS, "")
        row.update(
            model=model, model_id=first["model_id"], family=first["family"], params=first["params"],
            train_tokens=first["train_tokens"], dataset=dataset, label=label,
            context_length=_joined(c["context_length"] for c in both),
            answer_length=_joined(c["answer_length"] for c in both),
            n_params=_joined(c.get("n_params") for c in both), tokenizer=_joined(c["tokenizer"] for c in both),
            batch_size=_joined(c.get("batch_size") for c in both), dtype=_joined(c.get("dtype") for c in both),
            protocol=_joined(c["protocol"] for c in both), limit=_joined(c["limit"] for c in both),
            default_task=d["task"] if d else "", jrt_task=j["task"] if j else "",
            jrt_eval_version=_joined(c["versions"].get("jrt_eval") for c in both),
            lm_eval_version=_joined(c["versions"].get("lm_eval") for c in both),
            transformers_version=_joined(c["versions"].get("transformers") for c in both),
            torch_version=_joined(c["versions"].get("torch") for c in both),
        )
        if not row["params"] and row["n_params"] and "|" not in row["n_params"]:
            row["params"] = _human(row["n_params"])
        failed = [c for c in both if c["status"] != "ok"]
        row["status"] = "failed" if failed else "ok"
        row["error"] = "; ".join(f"{c['form']}: {c['error']}" for c in failed)
        for prefix, c in (("default", d), ("jrt", j)):
            if c and c["status"] == "ok":
                row[f"{prefix}_score"] = _r(c["score"])
                row[f"{prefix}_stderr"] = _r(c["stderr"])
                row[f"{prefix}_outputs_sha"] = c["outputs_sha"]
                row[f"n_{prefix}"] = c["n"]
        if row["default_score"] != "" and row["jrt_score"] != "":
            row["delta"] = _r(row["jrt_score"] - row["default_score"])
        ctx = first["context_length"]
        p = _paper_match(paper, first["model_id"], dataset, ctx)
        if p:
            row["paper_default"], row["paper_jrt"] = _pct_to_frac(p["default"]), _pct_to_frac(p["jrt"])
            if row["paper_default"] is not None and row["paper_jrt"] is not None:
                row["paper_delta"] = _r(row["paper_jrt"] - row["paper_default"])
        row["_sort"] = (order.get(model, len(order)), ctx, label, ds_rank.get(dataset, len(ds_rank)))
        rows.append(row)
    rows.sort(key=lambda r: r["_sort"])
    for r in rows:
        del r["_sort"]
    return rows


def _csv_text(rows: list, columns: list) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def _pct(x) -> Optional[float]:
    return None if x in ("", None) else round(100.0 * float(x), 1)


def _mean(xs) -> Optional[float]:
    xs = [x for x in xs if x not in ("", None)]
    return round(100.0 * sum(float(x) for x in xs) / len(xs), 1) if xs else None


def summarize(rows: list) -> tuple:
    """(columns, summary rows): one per (model, label), datasets as columns in paper order, in percent."""
    datasets = [d for d in DATASET_ORDER if any(r["dataset"] == d for r in rows)]
    datasets += sorted({r["dataset"] for r in rows} - set(datasets))
    has_jrt = any(r["jrt_score"] != "" for r in rows)
    has_paper = any(r["paper_default"] not in ("", None) for r in rows)
    cols = ["model", "model_id", "family", "params", "label", "context_length"]
    for d in datasets:
        cols += [DISPLAY.get(d, d)] + ([f"{DISPLAY.get(d, d)} JRT"] if has_jrt else [])
    cols += ["Average"] + (["Average JRT", "Delta"] if has_jrt else []) + ["n_datasets"]
    if has_paper:
        cols += ["Paper Average"] + (["Paper Average JRT"] if has_jrt else [])
    out, seen = [], {}
    for r in rows:
        key = (r["model"], r["label"])
        if key not in seen:
            seen[key] = {"model": r["model"], "model_id": r["model_id"], "family": r["family"], "params": r["params"],
                         "label": r["label"], "_rows": []}
            out.append(seen[key])
        seen[key]["_rows"].append(r)
    for s in out:
        rs = s.pop("_rows")
        s["context_length"] = _joined(r["context_length"] for r in rs)
        for r in rs:
            name = DISPLAY.get(r["dataset"], r["dataset"])
            s[name] = _pct(r["default_score"])
            if has_jrt:
                s[f"{name} JRT"] = _pct(r["jrt_score"])
        s["Average"] = _mean(r["default_score"] for r in rs)
        if has_jrt:
            s["Average JRT"] = _mean(r["jrt_score"] for r in rs)
            if s["Average"] is not None and s["Average JRT"] is not None:
                s["Delta"] = round(s["Average JRT"] - s["Average"], 1)
        s["n_datasets"] = sum(1 for r in rs if r["default_score"] != "" or r["jrt_score"] != "")
        if has_paper:
            matched = [r for r in rs if r["paper_default"] not in ("", None)]
            if matched and len(matched) == len(rs):  # the paper's average over the same datasets
                s["Paper Average"] = _mean(r["paper_default"] for r in matched)
                if has_jrt:
                    s["Paper Average JRT"] = _mean(r["paper_jrt"] for r in matched)
    return cols, out


def _markdown(cols: list, summary: list, rows: list, run_dir: Path, problems: list) -> str:
    def fmt(v):
        return "" if v in (None, "") else (f"{v:.1f}" if isinstance(v, float) else str(v))

    lines = [f"# jrt-eval leaderboard: {run_dir}", "",
             "`contains` accuracy in percent (default / JRT-Prompt when both ran); Average over the datasets "
             "shown. Per-cell detail: leaderboard.csv.", ""]
    datasets = [c for c in cols if c in DISPLAY.values() or c in {r["dataset"] for r in rows}]
    has_jrt = "Average JRT" in cols
    head = ["model", "params", "label"] + datasets + ["Average"] + (["Delta"] if has_jrt else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [s["model"], s["params"], s["label"]]
        for d in datasets:
            cells.append(fmt(s.get(d)) + (f" / {fmt(s.get(d + ' JRT'))}" if has_jrt else ""))
        cells.append(fmt(s.get("Average")) + (f" / {fmt(s.get('Average JRT'))}" if has_jrt else ""))
        if has_jrt:
            cells.append(fmt(s.get("Delta")))
        lines.append("| " + " | ".join(cells) + " |")
    paper_rows = [r for r in rows if r["paper_default"] not in ("", None)]
    if paper_rows:
        lines += ["", "Paper (published, same model id / dataset / context length), in percent:", "",
                  "| model | dataset | label | ours | paper |", "|---|---|---|---|---|"]
        for r in paper_rows:
            ours = fmt(_pct(r["default_score"])) + (f" / {fmt(_pct(r['jrt_score']))}" if r["jrt_task"] else "")
            theirs = fmt(_pct(r["paper_default"])) + (f" / {fmt(_pct(r['paper_jrt']))}" if r["paper_jrt"] not in ("", None) else "")
            lines.append(f"| {r['model']} | {DISPLAY.get(r['dataset'], r['dataset'])} | {r['label']} | {ours} | {theirs} |")
    failed = [r for r in rows if r["status"] != "ok"]
    if failed or problems:
        lines += ["", "Not scored:", ""]
        lines += [f"- {r['model']} {r['dataset']}{' @' + r['label'] if r['label'] else ''}: {r['error']}" for r in failed]
        lines += [f"- {p} (left out)" for p in problems]
    return "\n".join(lines) + "\n"


def build(run_dir, plot: bool = True, echo: bool = False) -> dict:
    """Write the leaderboard files of a run; returns {name: path} (plus 'problems')."""
    run_dir = Path(run_dir)
    if not (run_dir / CELLS).is_dir():
        raise FileNotFoundError(f"{run_dir} has no {CELLS}/ folder: not a sweep run")
    cells, problems = collect(run_dir)
    rows = make_rows(cells, model_order=_model_order(run_dir, cells))
    cols, summary = summarize(rows)
    out = {"problems": problems}
    atomic_write_text(run_dir / LEADERBOARD, _csv_text(rows, COLUMNS))
    out["leaderboard"] = run_dir / LEADERBOARD
    atomic_write_text(run_dir / SUMMARY_CSV, _csv_text(summary, cols))
    out["summary_csv"] = run_dir / SUMMARY_CSV
    md = _markdown(cols, summary, rows, run_dir, problems)
    atomic_write_text(run_dir / SUMMARY_MD, md)
    out["summary_md"] = run_dir / SUMMARY_MD
    for p in problems:
        print(f"jrt-eval leaderboard: left out {p}", file=sys.stderr)
    if plot and rows:
        from .plot import plot_leaderboard

        path = plot_leaderboard(rows, run_dir / PLOT, title=str(run_dir))
        if path is not None:
            out["plot"] = path
    if echo:
        print(md)
        print(f"jrt-eval leaderboard: {len(rows)} rows -> " + ", ".join(
            str(v) for k, v in out.items() if k != "problems"), file=sys.stderr)
    return out


def read_csv(path) -> list:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="jrt-eval leaderboard", description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="sweep run folder (results/<run>)")
    ap.add_argument("--no-plot", action="store_true", help="CSV and markdown only")
    ap.add_argument("--quiet", action="store_true", help="do not print the summary table")
    args = ap.parse_args(argv)
    try:
        out = build(args.run, plot=not args.no_plot, echo=not args.quiet)
    except FileNotFoundError as exc:
        print(f"jrt-eval leaderboard: error: {exc}", file=sys.stderr)
        return 2
    return 1 if out["problems"] else 0
