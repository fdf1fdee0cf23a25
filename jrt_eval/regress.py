"""`jrt-eval regress`: fail (exit 1) when a run's scores dropped below a baseline leaderboard.

    jrt-eval regress --baseline results/baselines/small.csv --run results/ci-small --tolerance 0.02

``--run`` is a sweep folder (its cells are read from their JSON, so a stale leaderboard.csv cannot hide
anything) or a leaderboard CSV. Cells are matched on (model, dataset, label, context_length); for each
score the baseline has (default and JRT-Prompt), the check fails when

* the run's score is lower than the baseline's by more than ``--tolerance`` (a fraction: 0.02 = 2
  points of ``contains``); with ``--two-sided`` a rise beyond tolerance fails too (for deterministic
  tiny checkpoints, where any change means the pipeline changed);
* the cell is missing from the run or failed there (unless ``--allow-missing``);
* the number of scored documents differs (different data: not comparable);
* with ``--check-outputs``, the digest of prompts and generations differs.

Cells only in the run are listed as new, improvements beyond tolerance as a hint to update the
baseline. Exit status: 0 pass, 1 regression, 2 bad input (missing file, not a leaderboard CSV).
To make a baseline, copy a run's leaderboard.csv (see results/README.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .leaderboard import COLUMNS, _model_order, collect, make_rows, read_csv

KEY = ("model", "dataset", "label", "context_length")
FORMS = (("default", "default_score", "n_default", "default_outputs_sha"),
         ("jrt", "jrt_score", "n_jrt", "jrt_outputs_sha"))
_EPS = 1e-9


class InputError(ValueError):
    pass


def _num(v):
    if v in ("", None):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        raise InputError(f"not a number: {v!r}") from None


def load_rows(source) -> list:
    """Leaderboard rows (dicts of strings/numbers) from a CSV file or a sweep folder."""
    path = Path(source)
    if path.is_dir():
        cells, problems = collect(path)
        for p in problems:
            print(f"jrt-eval regress: {path}: left out {p}", file=sys.stderr)
        if not cells:
            raise InputError(f"{path} holds no readable cells (cells/<model>/<task>/results.json)")
        return make_rows(cells, model_order=_model_order(path, cells))
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        rows = read_csv(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    need = set(KEY) | {"default_score", "jrt_score", "n_default", "n_jrt"}
    if not rows or not need <= set(rows[0]):
        missing = sorted(need - set(rows[0])) if rows else "all (empty file)"
        raise InputError(f"{path} is not a jrt-eval leaderboard CSV (missing columns: {missing})")
    return rows


def _key(row) -> tuple:
    return tuple(str(row.get(k, "") if row.get(k) is not None else "") for k in KEY)


def compare(baseline: list, run: list, tolerance: float, two_sided: bool = False, check_outputs: bool = False,
            allow_missing: bool = False, models=None) -> dict:
    """{'failures': [...], 'notes': [...], 'compared': n}; each failure/note is a dict with cell, form, why."""
    run_by = {}
    for r in run:
        run_by.setdefault(_key(r), r)
    base_keys = set()
    failures, notes, compared = [], [], 0
    for b in baseline:
        if models and b["model"] not in models:
            continue
        k = _key(b)
        base_keys.add(k)
        r = run_by.get(k)
        cell = f"{b['model']} {b['dataset']}" + (f"@{b['label']}" if b.get("label") else "") + \
            f" (ctx {b['context_length']})"
        for form, score_col, n_col, sha_col in FORMS:
            bs = _num(b.get(score_col))
            if bs is None:
                continue
            compared += 1
            rs = _num(r.get(score_col)) if r is not None else None
            if rs is None:
                why = "not in the run" if r is None else f"no score in the run ({r.get('error') or 'not run'})"
                (notes if allow_missing else failures).append(dict(cell=cell, form=form, baseline=bs, run=None, why=why))
                continue
            bn, rn = b.get(n_col), r.get(n_col)
            if str(bn) not in ("", "None") and str(rn) != str(bn):
                failures.append(dict(cell=cell, form=form, baseline=bs, run=rs,
                                     why=f"scored documents changed: {bn} -> {rn} (not comparable)"))
                continue
            diff = rs - bs
            if diff < -tolerance - _EPS:
                failures.append(dict(cell=cell, form=form, baseline=bs, run=rs, why=f"dropped by {-diff:.4f}"))
            elif diff > tolerance + _EPS:
                entry = dict(cell=cell, form=form, baseline=bs, run=rs, why=f"rose by {diff:.4f}")
                if two_sided:
                    failures.append(entry)
                else:
                    entry["why"] += " (update the baseline?)"
                    notes.append(entry)
            if check_outputs and b.get(sha_col) and str(r.get(sha_col)) != str(b.get(sha_col)):
                failures.append(dict(cell=cell, form=form, baseline=bs, run=rs,
                                     why=f"outputs changed (digest {b.get(sha_col)} -> {r.get(sha_col)})"))
    for k, r in run_by.items():
        if k not in base_keys and (not models or r["model"] in models):
            notes.append(dict(cell=f"{r['model']} {r['dataset']}" + (f"@{r['label']}" if r.get("label") else ""),
                              form="", baseline=None, run=None, why="new in the run (not in the baseline)"))
    return {"failures": failures, "notes": notes, "compared": compared}


def _fmt(x):
    return "-" if x is None else f"{x:.4f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="jrt-eval regress", description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="baseline leaderboard CSV (e.g. results/baselines/small.csv)")
    ap.add_argument("--run", required=True, help="sweep folder or leaderboard CSV to check")
    ap.add_argument("--tolerance", type=float, default=0.02, help="allowed drop, as a fraction (default 0.02)")
    ap.add_argument("--two-sided", action="store_true", help="a rise beyond tolerance fails too")
    ap.add_argument("--check-outputs", action="store_true", help="fail when prompts or generations changed")
    ap.add_argument("--allow-missing", action="store_true", help="baseline cells absent from the run only warn")
    ap.add_argument("--models", help="comma list: check only these models of the baseline")
    args = ap.parse_args(argv)
    if args.tolerance < 0:
        print("jrt-eval regress: error: --tolerance must be >= 0", file=sys.stderr)
        return 2
    try:
        baseline = load_rows(args.baseline)
        run = load_rows(args.run)
    except InputError as exc:
        print(f"jrt-eval regress: error: {exc}", file=sys.stderr)
        return 2
    models = {m.strip() for m in args.models.split(",") if m.strip()} if args.models else None
    res = compare(baseline, run, args.tolerance, args.two_sided, args.check_outputs, args.allow_missing, models)
    for n in res["notes"]:
        print(f"note: {n['cell']} {n['form']}: {n['why']}" +
              (f" (baseline {_fmt(n['baseline'])}, run {_fmt(n['run'])})" if n["baseline"] is not None else ""))
    if res["compared"] == 0:
        print(f"jrt-eval regress: error: no baseline scores to compare in {args.baseline}"
              + (f" for models {sorted(models)}" if models else ""), file=sys.stderr)
        return 2
    if res["failures"]:
        print(f"{'cell':48s} {'form':8s} {'baseline':>8s} {'run':>8s}  why")
        for f in res["failures"]:
            print(f"{f['cell']:48s} {f['form']:8s} {_fmt(f['baseline']):>8s} {_fmt(f['run']):>8s}  {f['why']}")
        print(f"jrt-eval regress: FAIL: {len(res['failures'])} of {res['compared']} baseline scores regressed "
              f"(tolerance {args.tolerance}; baseline {args.baseline}, run {args.run})")
        return 1
    print(f"jrt-eval regress: OK: {res['compared']} baseline scores within tolerance {args.tolerance} "
          f"(baseline {args.baseline}, run {args.run})")
    return 0


assert set(KEY) <= set(COLUMNS)
