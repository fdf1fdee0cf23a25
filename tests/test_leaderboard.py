"""Leaderboard from per-cell JSON: pairing of forms, paper matching, averages, failed and corrupt cells, plot.

Cells here are written in the layout the sweep worker writes (checked against a real sweep in
test_sweep.py); their numbers are chosen so every column can be checked by hand.
"""
import csv
import json
import sys
from pathlib import Path

import pytest

from jrt_eval import leaderboard
from jrt_eval.leaderboard import COLUMNS
from jrt_eval.sweep import load_registry

PNG = b"\x89PNG\r\n\x1a\n"
VERSIONS = {"jrt_eval": "0.1.0", "lm_eval": "0.4.13", "transformers": "5.23.0", "torch": "2.13.0+cpu"}


def write_cell(run, model, model_id, task, hits, ctx=1000, label="", status="ok", error=None, family="based",
               params="1.3B"):
    """A cell folder with len(hits) scored documents, hits[i] = contains of document i."""
    name = task[len("jrt_"):]
    form = "twice" if name.endswith("_twice") else "default"
    dataset = name[: -len("_twice")] if form == "twice" else name
    d = Path(run) / "cells" / model / (task + (f"@{label}" if label else ""))
    d.mkdir(parents=True)
    info = {"schema": 1, "cell": f"{model}/{task}", "config_hash": "x", "task": task, "dataset": dataset, "form": form,
            "label": label, "metadata": {"context_length": ctx}, "model_args": {}, "limit": None, "status": status,
            "error": error, "batch_size": 8, "versions": VERSIONS,
            "options": {"context_length": ctx, "answer_length": 50, "protocol": "paper", "tokenizer": "gpt2"},
            "model": {"key": model, "id": model_id, "family": family, "params": params, "train_tokens": "50B"}}
    data = {"jrt_cell": info}
    if status == "ok":
        score = sum(hits) / len(hits)
        data.update({"results": {task: {"contains,none": score, "contains_stderr,none": 0.1}},
                     "n-samples": {task: {"original": len(hits), "effective": len(hits)}},
                     "config": {"model_num_parameters": 1300000, "model_dtype": "torch.float32"}})
        (d / "samples.jsonl").write_text("".join(
            json.dumps({"doc_id": i, "prompt_hash": f"{form}{i}", "filtered_resps": [f"{form}{i}"], "contains": h}) + "\n"
            for i, h in enumerate(hits)))
    (d / "results.json").write_text(json.dumps(data))
    return d


@pytest.fixture
def run(tmp_path):
    r = tmp_path / "run"
    m, mid = "based-1.3b-50b", "hazyresearch/based-1b-50b"
    write_cell(r, m, mid, "jrt_fda", [1, 0, 0, 0])  # 0.25
    write_cell(r, m, mid, "jrt_fda_twice", [1, 1, 0, 0])  # 0.5
    write_cell(r, m, mid, "jrt_swde", [1, 1, 1, 0])  # 0.75
    write_cell(r, m, mid, "jrt_swde_twice", [1, 1, 1, 1])  # 1.0
    write_cell(r, m, mid, "jrt_fda", [1, 1, 1, 1, 1], ctx=512, label="ctx512")  # Table 2 cell, default only
    write_cell(r, "mine", "/ckpt/mine", "jrt_drop", [0, 1])  # 0.5
    write_cell(r, "mine", "/ckpt/mine", "jrt_drop_twice", [], status="failed", error="CellOOM: out of memory")
    return r


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_rows_pair_forms_and_match_the_paper(run):
    out = leaderboard.build(run, plot=False)
    rows = rows_of(out["leaderboard"])
    assert list(rows[0]) == COLUMNS
    key = [(r["model"], r["dataset"], r["label"]) for r in rows]
    # by model, then setting (context length, label), then dataset in the paper's column order
    assert key == [("based-1.3b-50b", "fda", "ctx512"), ("based-1.3b-50b", "fda", ""),
                   ("based-1.3b-50b", "swde", ""), ("mine", "drop", "")]
    fda512, fda, swde, drop = rows
    assert (fda["default_score"], fda["jrt_score"], fda["delta"]) == ("0.25", "0.5", "0.25")
    assert (fda["n_default"], fda["n_jrt"], fda["context_length"], fda["answer_length"]) == ("4", "4", "1000", "50")
    assert (fda["default_task"], fda["jrt_task"], fda["status"]) == ("jrt_fda", "jrt_fda_twice", "ok")
    assert (fda["lm_eval_version"], fda["torch_version"], fda["jrt_eval_version"]) == ("0.4.13", "2.13.0+cpu", "0.1.0")
    assert (fda["n_params"], fda["dtype"], fda["family"], fda["params"]) == ("1300000", "float32", "based", "1.3B")
    # paper Table 1, Based 1.3B/50B FDA: 60.2 / 68.3 at context length 1000 ...
    assert (fda["paper_default"], fda["paper_jrt"], fda["paper_delta"]) == ("0.602", "0.683", "0.081")
    # ... and Table 2's FDA-512 column (69.3, default prompts only) for the 512-token cell
    assert (fda512["default_score"], fda512["jrt_score"], fda512["paper_default"], fda512["paper_jrt"]) == \
        ("1.0", "", "0.693", "")
    assert swde["paper_default"] == "0.371" and swde["delta"] == "0.25"
    assert drop["paper_default"] == ""  # no published number for an unknown checkpoint
    assert drop["status"] == "failed" and "twice: CellOOM: out of memory" in drop["error"]
    assert drop["default_score"] == "0.5" and drop["jrt_score"] == "" and drop["delta"] == ""
    # the outputs digest depends on the generations
    assert len(fda["default_outputs_sha"]) == 16 and fda["default_outputs_sha"] != fda["jrt_outputs_sha"]


def test_summary_is_wide_in_paper_order_and_percent(run):
    out = leaderboard.build(run, plot=False)
    rows = rows_of(out["summary_csv"])
    assert list(rows[0])[:6] == ["model", "model_id", "family", "params", "label", "context_length"]
    cols = list(rows[0])
    assert cols.index("FDA") < cols.index("SWDE") < cols.index("DROP") < cols.index("Average")
    based = next(r for r in rows if r["model"] == "based-1.3b-50b" and r["label"] == "")
    assert (based["FDA"], based["FDA JRT"], based["SWDE"], based["SWDE JRT"]) == ("25.0", "50.0", "75.0", "100.0")
    assert (based["Average"], based["Average JRT"], based["Delta"], based["n_datasets"]) == ("50.0", "75.0", "25.0", "2")
    # the paper's average over the same two datasets: (60.2 + 37.1) / 2, (68.3 + 54.0) / 2 = 61.15
    assert (based["Paper Average"], based["Paper Average JRT"]) == ("48.6", "61.2")
    md = out["summary_md"].read_text()
    assert "| based-1.3b-50b | 1.3B |  | 25.0 / 50.0 | 75.0 / 100.0 |" in md
    assert "mine drop: twice: CellOOM" in md


def test_corrupt_cells_are_reported_and_left_out(run, capsys):
    write_cell(run, "mine", "/ckpt/mine", "jrt_swde", [1, 1])
    (run / "cells" / "mine" / "jrt_swde" / "results.json").write_text('{"results": {"jrt_sw')  # truncated
    d = write_cell(run, "mine", "/ckpt/mine", "jrt_fda", [1, 1, 1])
    (d / "samples.jsonl").write_text((d / "samples.jsonl").read_text().splitlines()[0] + "\n")  # lost records
    out = leaderboard.build(run, plot=False)
    assert len(out["problems"]) == 2
    assert any("mine/jrt_swde" in p and "does not parse" in p for p in out["problems"])
    assert any("mine/jrt_fda" in p and "samples.jsonl has 1 records, results.json says 3" in p for p in out["problems"])
    assert {(r["model"], r["dataset"]) for r in rows_of(out["leaderboard"])} == {
        ("based-1.3b-50b", "fda"), ("based-1.3b-50b", "swde"), ("mine", "drop")}
    assert leaderboard.main([str(run), "--quiet", "--no-plot"]) == 1  # left-out cells make the exit non-zero


def test_command_writes_a_png_and_rebuilds_identically(run):
    pytest.importorskip("matplotlib", reason="the plot needs the optional extra jrt-eval[plot]")
    assert leaderboard.main([str(run), "--quiet"]) == 0
    png = run / "leaderboard.png"
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    first = (run / "leaderboard.csv").read_bytes()
    assert leaderboard.main([str(run), "--quiet", "--no-plot"]) == 0
    assert (run / "leaderboard.csv").read_bytes() == first


def test_plot_fails_soft_without_matplotlib(run, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = leaderboard.build(run, plot=True)
    assert "plot" not in out and out["leaderboard"].is_file()
    assert "matplotlib is not installed (pip install 'jrt-eval[plot]')" in capsys.readouterr().err
    assert not (run / "leaderboard.png").exists()


def test_not_a_run_folder(tmp_path, capsys):
    assert leaderboard.main([str(tmp_path), "--quiet"]) == 2
    assert "not a sweep run" in capsys.readouterr().err


def test_paper_numbers_cover_the_model_list():
    paper = leaderboard.load_paper()
    t1 = [p for p in paper if p["table"] == "1"]
    assert len(t1) == 16 * 6 and {p["context_length"] for p in t1} == {"1000"}
    registry = load_registry()
    table1_ids = {registry.models[m].id for m in registry.sets["paper-table1"].models}
    assert {p["model_id"] for p in t1} == table1_ids
    t2_ids = {p["model_id"] for p in paper if p["table"] == "2"} - {""}
    assert t2_ids == {registry.models[m].id for m in registry.sets["paper-table2"].models}
    # spot checks against the printed tables (reference-tasks.md §7)
    cell = {(p["table"], p["model_id"], p["dataset"], p["context_length"]): (p["default"], p["jrt"]) for p in paper}
    assert cell[("1", "state-spaces/mamba2-2.7b", "drop", "1000")] == ("23.0", "42.5")
    assert cell[("1", "fla-hub/gla-1.3B-100B", "triviaqa", "1000")] == ("55.5", "54.6")
    assert cell[("2", "hazyresearch/JRT-1B-50B", "nq_512", "2000")] == ("38.3", "")


def test_size_comes_from_the_parameter_count_when_the_list_gives_none(tmp_path):
    write_cell(tmp_path, "anon", "/ckpt/anon", "jrt_swde", [1, 0], params="")
    rows = rows_of(leaderboard.build(tmp_path, plot=False)["leaderboard"])
    assert (rows[0]["params"], rows[0]["n_params"]) == ("1.3M", "1300000")
