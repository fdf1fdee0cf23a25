"""`jrt-eval regress` on leaderboard CSVs: passing, failing, missing cells, changed data, bad input.

The same check on a real sweep folder (and against the committed baseline) runs in test_sweep.py.
"""
import csv
import subprocess
import sys
from pathlib import Path

import pytest

from jrt_eval import regress
from jrt_eval.leaderboard import COLUMNS, read_csv

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "results" / "baselines" / "small.csv"


def row(model, dataset, default, jrt, n=6, label="", ctx=1000, sha=("aaaa", "bbbb")):
    r = dict.fromkeys(COLUMNS, "")
    r.update(model=model, model_id=f"tiny:{model}", dataset=dataset, label=label, context_length=ctx,
             default_score=default, jrt_score=jrt, n_default=n, n_jrt=n, status="ok",
             default_outputs_sha=sha[0], jrt_outputs_sha=sha[1], default_task=f"jrt_{dataset}",
             jrt_task=f"jrt_{dataset}_twice")
    return r


def write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return str(path)


@pytest.fixture
def base(tmp_path):
    return write(tmp_path / "base.csv", [row("m1", "swde", 0.5, 0.7), row("m1", "fda", 0.4, 0.6),
                                         row("m2", "swde", 0.3, 0.35)])


def run_regress(capsys, *args):
    code = regress.main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_within_tolerance_passes(tmp_path, base, capsys):
    run = write(tmp_path / "run.csv", [row("m1", "swde", 0.49, 0.69), row("m1", "fda", 0.4, 0.62),
                                       row("m2", "swde", 0.3, 0.33)])
    code, out = run_regress(capsys, "--baseline", base, "--run", run, "--tolerance", "0.02")
    assert code == 0, out
    assert "OK: 6 baseline scores" in out


def test_drop_beyond_tolerance_fails_and_names_the_cell(tmp_path, base, capsys):
    run = write(tmp_path / "run.csv", [row("m1", "swde", 0.5, 0.64), row("m1", "fda", 0.4, 0.6),
                                       row("m2", "swde", 0.25, 0.35)])
    code, out = run_regress(capsys, "--baseline", base, "--run", run, "--tolerance", "0.02")
    assert code == 1
    failing = [ln for ln in out.splitlines() if "dropped by" in ln]
    assert len(failing) == 2
    assert any(ln.startswith("m1 swde") and " jrt " in ln and "dropped by 0.0600" in ln for ln in failing)
    assert any(ln.startswith("m2 swde") and " default " in ln and "dropped by 0.0500" in ln for ln in failing)
    assert "FAIL: 2 of 6" in out
    # exactly at the tolerance is not a regression; a larger tolerance lets both through
    assert run_regress(capsys, "--baseline", base, "--run", run, "--tolerance", "0.06")[0] == 0


def test_rise_is_a_note_unless_two_sided(tmp_path, base, capsys):
    run = write(tmp_path / "run.csv", [row("m1", "swde", 0.6, 0.7), row("m1", "fda", 0.4, 0.6),
                                       row("m2", "swde", 0.3, 0.35)])
    code, out = run_regress(capsys, "--baseline", base, "--run", run)
    assert code == 0 and "rose by 0.1000 (update the baseline?)" in out
    code, out = run_regress(capsys, "--baseline", base, "--run", run, "--two-sided")
    assert code == 1 and "m1 swde" in out


def test_missing_or_failed_cells_fail_unless_allowed(tmp_path, base, capsys):
    failed = row("m1", "fda", "", "")
    failed.update(status="failed", error="default: RuntimeError: boom")
    run = write(tmp_path / "run.csv", [row("m1", "swde", 0.5, 0.7), failed, row("m3", "swde", 0.1, 0.1)])
    code, out = run_regress(capsys, "--baseline", base, "--run", run)
    assert code == 1
    assert "m1 fda" in out and "RuntimeError: boom" in out  # failed in the run, with its error
    assert "m2 swde" in out and "not in the run" in out
    assert "m3 swde" in out and "new in the run" in out
    code, out = run_regress(capsys, "--baseline", base, "--run", run, "--allow-missing")
    assert code == 0
    # restricting the check to models the run has
    code, out = run_regress(capsys, "--baseline", base, "--run", run, "--models", "m1", "--allow-missing")
    assert code == 0 and "m2 swde" not in out


def test_changed_document_counts_are_not_comparable(tmp_path, base, capsys):
    run = write(tmp_path / "run.csv", [row("m1", "swde", 0.5, 0.7, n=7), row("m1", "fda", 0.4, 0.6),
                                       row("m2", "swde", 0.3, 0.35)])
    code, out = run_regress(capsys, "--baseline", base, "--run", run)
    assert code == 1 and "scored documents changed: 6 -> 7" in out


def test_check_outputs_catches_changed_generations(tmp_path, base, capsys):
    run = write(tmp_path / "run.csv", [row("m1", "swde", 0.5, 0.7, sha=("aaaa", "cccc")), row("m1", "fda", 0.4, 0.6),
                                       row("m2", "swde", 0.3, 0.35)])
    assert run_regress(capsys, "--baseline", base, "--run", run)[0] == 0
    code, out = run_regress(capsys, "--baseline", base, "--run", run, "--check-outputs")
    assert code == 1 and "outputs changed (digest bbbb -> cccc)" in out


def test_cells_match_on_label_and_context_length(tmp_path, capsys):
    base = write(tmp_path / "b.csv", [row("m", "fda", 0.5, "", label="ctx512", ctx=512),
                                      row("m", "fda", 0.3, "", label="ctx1024", ctx=1024)])
    run = write(tmp_path / "r.csv", [row("m", "fda", 0.3, "", label="ctx1024", ctx=1024),
                                     row("m", "fda", 0.5, "", label="ctx512", ctx=512)])
    assert run_regress(capsys, "--baseline", base, "--run", run)[0] == 0
    swapped = write(tmp_path / "s.csv", [row("m", "fda", 0.5, "", label="ctx1024", ctx=1024),
                                         row("m", "fda", 0.3, "", label="ctx512", ctx=512)])
    code, out = run_regress(capsys, "--baseline", base, "--run", swapped)
    assert code == 1 and "m fda@ctx512" in out


def test_bad_input_exits_2(tmp_path, base, capsys):
    code, out = run_regress(capsys, "--baseline", str(tmp_path / "nope.csv"), "--run", base)
    assert code == 2 and "does not exist" in out
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    code, out = run_regress(capsys, "--baseline", str(other), "--run", base)
    assert code == 2 and "not a jrt-eval leaderboard CSV" in out
    code, out = run_regress(capsys, "--baseline", base, "--run", base, "--tolerance", "-1")
    assert code == 2
    empty = tmp_path / "empty"
    (empty / "cells").mkdir(parents=True)
    code, out = run_regress(capsys, "--baseline", base, "--run", str(empty))
    assert code == 2 and "no readable cells" in out
    code, out = run_regress(capsys, "--baseline", base, "--run", base, "--models", "nobody")
    assert code == 2 and "no baseline scores" in out


def test_jrt_eval_command_dispatches_regress(tmp_path, base):
    run = write(tmp_path / "run.csv", [row("m1", "swde", 0.1, 0.7), row("m1", "fda", 0.4, 0.6),
                                       row("m2", "swde", 0.3, 0.35)])
    proc = subprocess.run([str(Path(sys.executable).parent / "jrt-eval"), "regress", "--baseline", base, "--run", run],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "m1 swde" in proc.stdout and "dropped by 0.4000" in proc.stdout


def test_committed_small_baseline_is_a_clean_leaderboard():
    rows = read_csv(BASELINE)
    assert rows and set(COLUMNS) <= set(rows[0])
    models = {r["model"] for r in rows}
    assert {"tiny-hf-gpt2", "tiny-hf-mamba"} <= models
    for m in models:
        got = [r["dataset"] for r in rows if r["model"] == m]
        assert got == ["fda", "swde", "nq_1024", "squad", "triviaqa", "drop"]  # paper column order
    for r in rows:
        assert r["status"] == "ok" and r["error"] == ""
        assert 0.0 <= float(r["default_score"]) <= 1.0 and 0.0 <= float(r["jrt_score"]) <= 1.0
        assert int(r["n_default"]) == int(r["n_jrt"]) > 0
        assert r["context_length"] == "1000"
