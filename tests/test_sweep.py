"""`jrt-eval sweep`: model list and sets, cell planning, resume rules, OOM retry, and real sweeps through
lm-eval worker subprocesses on tiny offline checkpoints and the bundled samples (end to end, kill and
resume, Ray)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from jrt_eval import sweep
from jrt_eval.sweep import (Cell, CellOOM, UsageError, cell_status, expand_tasks, load_registry, plan_cells,
                            resolve_models, run_with_oom_retry)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BASELINE = ROOT / "results" / "baselines" / "small.csv"
TINY = "tiny-hf-gpt2,tiny-hf-mamba"  # stock transformers architectures through lm-eval's `hf` model
BUNDLED = '{"jrt_data_dir": "bundled"}'
# scored documents of the bundled samples (records whose answer is <= 1 character are dropped by the cut)
N_DOCS = {"fda": 5, "swde": 6, "nq_1024": 5, "squad": 3, "triviaqa": 3, "drop": 2}

# reference-tasks.md §6.1: the 16 rows of the paper's Table 1
TABLE1_IDS = {
    "hazyresearch/attn-1b", "hazyresearch/mamba-1b", "hazyresearch/based-1b", "hazyresearch/attn-1b-50bn",
    "hazyresearch/mamba-1b-50b", "hazyresearch/based-1b-50b", "fla-hub/gla-1.3B-100B", "fla-hub/gla-2.7B-100B",
    "state-spaces/mamba-130m", "state-spaces/mamba-370m", "state-spaces/mamba-1.4b", "state-spaces/mamba-2.8b",
    "state-spaces/mamba2-130m", "state-spaces/mamba2-370m", "state-spaces/mamba2-1.3b", "state-spaces/mamba2-2.7b",
}


def env():
    # one thread per worker: tiny models run faster so on a small shared machine
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1"}


def jrt_eval(*args, timeout=600):
    return subprocess.run([str(BIN / "jrt-eval"), *args], capture_output=True, text=True, env=env(), cwd=ROOT,
                          timeout=timeout)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cell_jsons(run):
    return {f"{p.parent.parent.name}/{p.parent.name}": p for p in sorted(Path(run).glob("cells/*/*/results.json"))}


# ------------------------------------------------------------------------------------ model list

def test_paper_sets_name_the_papers_checkpoints():
    reg = load_registry()
    t1 = [reg.models[m] for m in reg.sets["paper-table1"].models]
    assert len(t1) == 16 and {m.id for m in t1} == TABLE1_IDS
    fam = {m.id: m.family for m in t1}
    assert fam["hazyresearch/mamba-1b"] == "mamba" and fam["fla-hub/gla-2.7B-100B"] == "gla"
    assert fam["state-spaces/mamba2-130m"] == "mamba2" and fam["hazyresearch/attn-1b-50bn"] == "attn"
    for m in t1:  # tokenizer and size for every row (reference-tasks.md §5.3)
        assert m.params and m.train_tokens and m.paper
        want = "gpt2" if m.id.startswith("hazyresearch/") else (
            "EleutherAI/gpt-neox-20b" if m.id.startswith("state-spaces/") else m.id)
        assert m.tokenizer == want
    t2 = {reg.models[m].id for m in reg.sets["paper-table2"].models}
    assert {"hazyresearch/JRT-360M-30B", "hazyresearch/JRT-1B-50B", "hazyresearch/attn-360M-30B",
            "hazyresearch/based-360M-30B", "hazyresearch/mamba-360M-30B", "hazyresearch/based-1b-50b"} <= t2


def test_table1_plan():
    reg = load_registry()
    cells = plan_cells(resolve_models(["paper-table1"], reg), None, {}, {}, None, None)
    assert len(cells) == 16 * 12
    first = [c.task for c in cells if c.model["key"] == "attn-1.3b-10b"]
    assert first == ["jrt_fda", "jrt_swde", "jrt_nq_1024", "jrt_squad", "jrt_triviaqa", "jrt_drop",
                     "jrt_fda_twice", "jrt_swde_twice", "jrt_nq_1024_twice", "jrt_squad_twice",
                     "jrt_triviaqa_twice", "jrt_drop_twice"]
    assert all(c.metadata == {"context_length": 1000, "answer_length": 50} and c.batch_size == 32 for c in cells)
    gla = next(c for c in cells if c.model["key"] == "gla-1.3b-100b")
    assert gla.model_args == {"tokenizer": "fla-hub/gla-1.3B-100B"} and gla.rel_dir == "cells/gla-1.3b-100b/jrt_fda"


def test_table2_plan_has_three_lengths_and_nq_at_2000():
    reg = load_registry()
    cells = plan_cells(resolve_models(["paper-table2"], reg), None, {}, {}, None, None)
    assert len(cells) == 11 * (5 * 3 + 3)
    jrt = [c for c in cells if c.model["key"] == "jrt-rnn-360m-30b"]
    by_label = {}
    for c in jrt:
        by_label.setdefault(c.label, set()).add((c.dataset, c.metadata["context_length"]))
    assert by_label["ctx512"] == {(d, 512) for d in ("fda", "swde", "squad", "triviaqa", "drop")}
    assert by_label["ctx2048"] == {(d, 2048) for d in ("fda", "swde", "squad", "triviaqa", "drop")}
    assert by_label["ctx2000"] == {("nq_512", 2000), ("nq_1024", 2000), ("nq_2048", 2000)}
    assert all(c.form == "default" and c.batch_size == 8 for c in cells)
    assert {c.rel_dir for c in jrt} >= {"cells/jrt-rnn-360m-30b/jrt_fda@ctx512", "cells/jrt-rnn-360m-30b/jrt_nq_512@ctx2000"}
    # --tasks replaces the set's runs; --metadata beats the set's
    cells = plan_cells(resolve_models(["paper-table2"], reg), ["jrt_swde"], {"context_length": 300}, {}, 2, None)
    assert len(cells) == 11 and all(c.metadata["context_length"] == 300 and c.batch_size == 2 for c in cells)


def test_config_hash_tracks_what_a_cell_computes():
    reg = load_registry()
    (entry, origin), = resolve_models(["mamba-130m"], reg)
    a, = plan_cells([(entry, origin)], ["jrt_swde"], {}, {}, 8, None)
    b, = plan_cells([(entry, origin)], ["jrt_swde"], {}, {}, 32, None)  # batch size: execution detail
    c, = plan_cells([(entry, origin)], ["jrt_swde"], {"context_length": 512}, {}, 8, None)
    d, = plan_cells([(entry, origin)], ["jrt_swde"], {}, {"dtype": "bfloat16"}, 8, None)
    assert a.config_hash == b.config_hash
    assert len({a.config_hash, c.config_hash, d.config_hash}) == 3
    assert a.rel_dir == c.rel_dir == "cells/mamba-130m/jrt_swde"


def test_models_by_id_path_and_user_list(tmp_path):
    reg = load_registry()
    (e, _), = resolve_models(["state-spaces/mamba2-370m"], reg)  # an id of the list is its entry
    assert e.key == "mamba2-370m"
    (e, _), = resolve_models(["someone/new-model"], reg)
    assert (e.key, e.family) == ("someone__new-model", "jrt_auto")
    ckpt = tmp_path / "my ckpt"
    ckpt.mkdir()
    (e, _), = resolve_models([str(ckpt)], reg)
    assert e.id == str(ckpt.resolve()) and e.key.startswith("my_ckpt-") and e.family == "jrt_auto"
    (e, _), = resolve_models(["tiny:hf-gpt2"], reg)
    assert e.model_type == "hf"
    user = tmp_path / "mine.yaml"
    user.write_text(f"models:\n  mine: {{id: {ckpt}, family: based, params: 7M}}\n"
                    "sets:\n  ours: {models: [mine, mamba-130m], tasks: [jrt_swde], metadata: {context_length: 200}}\n")
    reg = load_registry([user])
    cells = plan_cells(resolve_models(["ours"], reg), None, {"answer_length": 20}, {}, None, None)
    assert [(c.model["key"], c.task, c.metadata) for c in cells] == [
        ("mine", "jrt_swde", {"context_length": 200, "answer_length": 20}),
        ("mamba-130m", "jrt_swde", {"context_length": 200, "answer_length": 20})]
    assert cells[0].model["family"] == "based" and cells[0].batch_size == sweep.DEFAULT_BATCH_SIZE


def test_task_groups_expand_in_order():
    assert expand_tasks(["jrt_table1"]) == ["jrt_fda", "jrt_swde", "jrt_nq_1024", "jrt_squad", "jrt_triviaqa", "jrt_drop"]
    assert len(expand_tasks(["jrt_all"])) == 16
    assert expand_tasks(["jrt_nq_1024", "jrt_nq", "jrt_swde"]) == ["jrt_nq_1024", "jrt_swde"]  # jrt_nq = nq_1024


def test_bad_input_is_refused(tmp_path, capsys):
    assert sweep.main(["--models", "paper-tabel1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown model or set 'paper-tabel1'" in err and "Did you mean paper-table1" in err
    assert sweep.main(["--models", "small", "--tasks", "jrt_swdee", "--out", str(tmp_path / "r")]) == 2
    assert "unknown task or group 'jrt_swdee'" in capsys.readouterr().err
    assert sweep.main(["--models", "small", "--metadata", "{oops", "--out", str(tmp_path / "r")]) == 2
    assert "--metadata: not valid JSON" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  x: {id: a/b, colour: red}\n")
    assert sweep.main(["--model-list", str(bad), "--models", "x", "--out", str(tmp_path / "r")]) == 2
    assert "unknown keys ['colour']" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_unreachable_ray_address(tmp_path, capsys):
    code = sweep.main(["--models", "tiny-hf-gpt2", "--tasks", "jrt_swde", "--out", str(tmp_path / "r"),
                       "--ray-address", "127.0.0.1:9"])
    assert code == 2
    err = capsys.readouterr().err
    try:
        import ray  # noqa: F401
        assert "cannot reach the Ray cluster at 127.0.0.1:9" in err
    except ImportError:
        assert "--ray-address needs Ray: pip install 'jrt-eval[ray]'" in err
    assert not list((tmp_path / "r").glob("cells/*/*/results.json"))


# ------------------------------------------------------------------------------------ OOM policy

def test_oom_retries_with_half_the_batch_then_fails():
    import torch

    tried = []

    def fits_at_2(bs):
        tried.append(bs)
        if bs > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"ran at {bs}"

    freed = []
    result, attempts, bs = run_with_oom_retry(fits_at_2, 16, on_oom=lambda: freed.append(1))
    assert (result, bs, tried) == ("ran at 2", 2, [16, 8, 4, 2])
    assert [a["batch_size"] for a in attempts] == [16, 8, 4]
    assert "Tried to allocate 2.00 GiB" in attempts[0]["error"]
    assert len(freed) == 3  # the model is dropped (memory freed) before each retry

    def never_fits(bs):
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(CellOOM, match=r"even at batch size 1 \(tried \[4, 2, 1\]\)"):
        run_with_oom_retry(never_fits, 4)

    def broken(bs):
        tried.append(("broken", bs))
        raise ValueError("not an OOM")

    with pytest.raises(ValueError):
        run_with_oom_retry(broken, 8)
    assert tried[-1] == ("broken", 8)  # other errors are not retried


def test_cell_status_trusts_only_complete_matching_results(tmp_path):
    reg = load_registry()
    cell, = plan_cells(resolve_models(["tiny-hf-gpt2"], reg), ["jrt_swde"], {}, {}, 4, None)
    d = tmp_path / cell.rel_dir
    assert cell_status(tmp_path, cell) == ("todo", "no results.json")
    d.mkdir(parents=True)
    samples = "".join(json.dumps({"doc_id": i, "contains": 0}) + "\n" for i in range(3))
    good = {"results": {"jrt_swde": {"contains,none": 0.0}}, "n-samples": {"jrt_swde": {"effective": 3}},
            "jrt_cell": {"config_hash": cell.config_hash, "task": "jrt_swde", "status": "ok"}}
    (d / "samples.jsonl").write_text(samples)
    (d / "results.json").write_text(json.dumps(good))
    assert cell_status(tmp_path, cell) == ("done", "")
    (d / "results.json").write_text(json.dumps(good)[:-7])  # torn write
    assert cell_status(tmp_path, cell)[0] == "corrupt"
    (d / "results.json").write_text(json.dumps({**good, "jrt_cell": {**good["jrt_cell"], "config_hash": "other"}}))
    assert cell_status(tmp_path, cell)[0] == "stale"
    (d / "results.json").write_text(json.dumps({"jrt_cell": {**good["jrt_cell"], "status": "failed", "error": "E"}}))
    assert cell_status(tmp_path, cell) == ("failed", "E")
    (d / "results.json").write_text(json.dumps(good))
    (d / "samples.jsonl").write_text(samples.splitlines()[0] + "\n")
    assert cell_status(tmp_path, cell) == ("corrupt", "samples.jsonl has 1 records, results.json says 3")
    (d / "samples.jsonl").write_text(samples)
    (d / "results.json").write_text(json.dumps({**good, "results": {"jrt_swde": {"contains,none": 7}}}))
    assert cell_status(tmp_path, cell)[0] == "corrupt"


# ------------------------------------------------------------------------------------ real sweeps

E2E_TASKS = "jrt_swde,jrt_swde_twice,jrt_nq_1024,jrt_nq_1024_twice"


def check_cell_files(run, key, task):
    """results.json / samples.jsonl / log.txt of a finished cell agree with each other."""
    d = Path(run) / "cells" / key
    res = json.loads((d / "results.json").read_text())
    info = res["jrt_cell"]
    assert info["status"] == "ok" and info["task"] == task and info["error"] is None
    samples = [json.loads(ln) for ln in (d / "samples.jsonl").read_text().splitlines()]
    n = res["n-samples"][task]["effective"]
    assert len(samples) == n == info["n"]
    assert res["results"][task]["contains,none"] == pytest.approx(sum(s["contains"] for s in samples) / n)
    assert f"jrt-eval sweep cell {key}" in (d / "log.txt").read_text()
    return res, samples


@pytest.mark.slow
def test_sweep_end_to_end(tmp_path):
    run = tmp_path / "run"
    t0 = time.time()
    # two workers pinned to "GPUs" 0 and 1 (CUDA_VISIBLE_DEVICES); without CUDA here they compute on CPU
    proc = jrt_eval("sweep", "--models", TINY, "--tasks", E2E_TASKS, "--metadata", BUNDLED, "--batch-size", "4",
                    "--devices", "0,1", "--out", str(run))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "all 8 cells done" in proc.stderr
    assert sorted(cell_jsons(run)) == sorted(f"{m}/{t}" for m in TINY.split(",") for t in E2E_TASKS.split(","))

    rows = read_rows(run / "leaderboard.csv")
    assert [(r["model"], r["dataset"]) for r in rows] == [
        ("tiny-hf-gpt2", "swde"), ("tiny-hf-gpt2", "nq_1024"), ("tiny-hf-mamba", "swde"), ("tiny-hf-mamba", "nq_1024")]
    versions = {k: metadata.version(d) for k, d in (("lm_eval_version", "lm-eval"), ("torch_version", "torch"),
                                                     ("transformers_version", "transformers"))}
    for r in rows:
        ds = r["dataset"]
        res_d, samples_d = check_cell_files(run, f"{r['model']}/jrt_{ds}", f"jrt_{ds}")
        res_j, samples_j = check_cell_files(run, f"{r['model']}/jrt_{ds}_twice", f"jrt_{ds}_twice")
        assert (r["default_task"], r["jrt_task"], r["status"], r["error"]) == (f"jrt_{ds}", f"jrt_{ds}_twice", "ok", "")
        assert int(r["n_default"]) == int(r["n_jrt"]) == N_DOCS[ds]
        assert float(r["default_score"]) == pytest.approx(sum(s["contains"] for s in samples_d) / N_DOCS[ds])
        assert float(r["jrt_score"]) == pytest.approx(sum(s["contains"] for s in samples_j) / N_DOCS[ds])
        assert float(r["delta"]) == pytest.approx(float(r["jrt_score"]) - float(r["default_score"]))
        assert (r["context_length"], r["answer_length"], r["batch_size"], r["dtype"]) == ("1000", "50", "4", "float32")
        assert r["model_id"] == "tiny:" + r["model"][len("tiny-"):]
        assert int(r["n_params"]) == res_d["config"]["model_num_parameters"] > 0
        assert r["tokenizer"] == "(checkpoint's own)" and r["paper_default"] == ""
        assert all(r[k] == v for k, v in versions.items()) and r["jrt_eval_version"]
        # the JRT-Prompt cell really read the document twice
        doc = samples_j[0]["doc"]
        assert samples_j[0]["arguments"]["gen_args_0"]["arg_0"] == doc["jrt_prompt"] != samples_d[0]["doc"]["jrt_prompt"]

    summary = read_rows(run / "summary.csv")
    assert [s["model"] for s in summary] == ["tiny-hf-gpt2", "tiny-hf-mamba"]
    cols = list(summary[0])
    assert cols.index("SWDE") < cols.index("SWDE JRT") < cols.index("NQ") < cols.index("Average")
    for s in summary:
        mine = [r for r in rows if r["model"] == s["model"]]
        assert float(s["Average"]) == pytest.approx(round(100 * sum(float(r["default_score"]) for r in mine) / 2, 1))
    try:
        import matplotlib  # noqa: F401  (optional extra jrt-eval[plot])
    except ImportError:
        assert "plot skipped: matplotlib is not installed" in proc.stderr and not (run / "leaderboard.png").exists()
    else:
        png = (run / "leaderboard.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    manifest = json.loads((run / "sweep.json").read_text())
    assert manifest["status"] == "finished" and manifest["ran"] == {"ok": 8, "failed": 0}
    assert manifest["mode"] == "local GPUs 0,1" and len(manifest["cells"]) == 8
    pinned = {}
    for key, path in cell_jsons(run).items():
        info = json.loads(path.read_text())["jrt_cell"]
        pinned.setdefault(info["cuda_visible_devices"], []).append(key)
        assert info["device"] == "cpu"
    assert set(pinned) == {"0", "1"}  # both workers ran cells, each pinned to its own device
    workers = {json.loads(ln)["worker"] for ln in (run / "events.jsonl").read_text().splitlines()}
    assert workers == {"gpu0", "gpu1"}

    # rebuilt from the JSON: the same CSV
    first = (run / "leaderboard.csv").read_bytes()
    (run / "leaderboard.csv").unlink()
    proc = jrt_eval("leaderboard", str(run), "--no-plot")
    assert proc.returncode == 0, proc.stderr
    assert (run / "leaderboard.csv").read_bytes() == first and "| tiny-hf-gpt2 |" in proc.stdout

    # a rerun skips every finished cell
    proc = jrt_eval("sweep", "--models", TINY, "--tasks", E2E_TASKS, "--metadata", BUNDLED, "--batch-size", "4",
                    "--out", str(run), "--no-plot")
    assert proc.returncode == 0 and "8 done; 0 to run" in proc.stderr, proc.stderr

    # regression check against the committed baseline's rows for these cells: passes ...
    base = [b for b in read_rows(BASELINE) if b["model"] in TINY.split(",") and b["dataset"] in ("swde", "nq_1024")]
    assert len(base) == 4
    with open(tmp_path / "base.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(base[0]))
        w.writeheader()
        w.writerows(base)
    proc = jrt_eval("regress", "--baseline", str(tmp_path / "base.csv"), "--run", str(run), "--tolerance", "0.02")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: 8 baseline scores" in proc.stdout
    # ... and fails, naming the cell, against a baseline that scored higher
    base[1]["jrt_score"] = str(float(base[1]["jrt_score"]) + 0.2)
    with open(tmp_path / "higher.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(base[0]))
        w.writeheader()
        w.writerows(base)
    proc = jrt_eval("regress", "--baseline", str(tmp_path / "higher.csv"), "--run", str(run))
    assert proc.returncode == 1
    bad = [ln for ln in proc.stdout.splitlines() if "dropped by 0.2000" in ln]
    assert len(bad) == 1 and bad[0].startswith(f"{base[1]['model']} {base[1]['dataset']}") and " jrt " in bad[0]
    print(f"end-to-end sweep + checks: {time.time() - t0:.1f} s")


@pytest.mark.slow
def test_resume_after_kill(tmp_path):
    """Kill the whole sweep (parent and worker, SIGKILL: like a lost node) after its first cell, plant a
    corrupt partial result, rerun: nothing finished is redone, nothing is lost or duplicated."""
    run = tmp_path / "run"
    args = [str(ROOT / "run_eval.sh"), "--models", "tiny-hf-gpt2", "--tasks", E2E_TASKS, "--metadata", BUNDLED,
            "--batch-size", "4", "--workers", "1", "--out", str(run), "--no-plot"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**env(), "PYTHON": sys.executable},
                            cwd=ROOT, start_new_session=True)
    deadline = time.time() + 300
    done = {}
    while time.time() < deadline and proc.poll() is None:
        done = {k: p for k, p in cell_jsons(run).items() if sweep.read_cell(p.parent)[0] == "ok"}
        if done:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = proc.stdout.read().decode()
    assert done and proc.returncode == -signal.SIGKILL, out[-3000:]
    assert len(done) < 4, "the sweep finished before it could be killed"
    kept = {k: p.read_bytes() for k, p in done.items()}
    todo = [f"tiny-hf-gpt2/{t}" for t in E2E_TASKS.split(",") if f"tiny-hf-gpt2/{t}" not in done]
    corrupt = run / "cells" / todo[-1] / "results.json"
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_text('{"results": {"jrt_nq_1024_twice": {"contains,none": 1.0')  # a torn write
    (corrupt.parent / ".results.json.abc.tmp").write_text("{")

    proc = subprocess.run(args, capture_output=True, text=True, env={**env(), "PYTHON": sys.executable}, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"{len(done)} done" in proc.stderr and f"{len(todo)} to run" in proc.stderr
    assert "not trusted, moved aside and rerun" in proc.stderr
    for k, blob in kept.items():
        assert (run / "cells" / k / "results.json").read_bytes() == blob  # finished cells were not rerun
    assert corrupt.with_name("results.json.corrupt").is_file() and not list(corrupt.parent.glob(".*.tmp"))
    for t in E2E_TASKS.split(","):
        check_cell_files(run, f"tiny-hf-gpt2/{t}", t)
    rows = read_rows(run / "leaderboard.csv")
    assert [(r["model"], r["dataset"], r["status"]) for r in rows] == [
        ("tiny-hf-gpt2", "swde", "ok"), ("tiny-hf-gpt2", "nq_1024", "ok")]
    assert all(int(r["n_default"]) == int(r["n_jrt"]) == N_DOCS[r["dataset"]] for r in rows)
    ran = [json.loads(ln) for ln in (run / "events.jsonl").read_text().splitlines()]
    ran = [e["cell"] for e in ran if e["event"] == "done"]
    assert sorted(ran) == sorted([*done, *todo])  # each cell ran to completion exactly once


@pytest.mark.slow
def test_sweep_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'jrt-eval[ray]'")
    run = tmp_path / "run"
    proc = jrt_eval("sweep", "--models", "tiny-hf-gpt2", "--tasks", "jrt_swde,jrt_swde_twice", "--metadata", BUNDLED,
                    "--batch-size", "4", "--ray-address", "local", "--workers", "2", "--out", str(run), "--no-plot")
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = json.loads((run / "sweep.json").read_text())
    assert manifest["mode"].startswith("ray (local, 2 workers")
    workers = {json.loads(ln)["worker"] for ln in (run / "events.jsonl").read_text().splitlines()
               if json.loads(ln)["event"] == "done"}
    assert workers <= {"ray0", "ray1"} and workers
    for t in ("jrt_swde", "jrt_swde_twice"):
        res, _ = check_cell_files(run, f"tiny-hf-gpt2/{t}", t)
        assert res["jrt_cell"]["host"]
    rows = read_rows(run / "leaderboard.csv")
    assert len(rows) == 1 and rows[0]["n_default"] == rows[0]["n_jrt"] == str(N_DOCS["swde"])


def test_run_eval_sh_passes_through_to_the_sweep():
    proc = subprocess.run([str(ROOT / "run_eval.sh"), "--help"], capture_output=True, text=True,
                          env={**env(), "PYTHON": sys.executable}, timeout=120)
    assert proc.returncode == 0 and "--ray-address" in proc.stdout and "--models" in proc.stdout


def test_a_cell_that_hangs_is_recorded_failed_and_the_sweep_goes_on(tmp_path):
    run = tmp_path / "run"
    proc = jrt_eval("sweep", "--models", "tiny-hf-gpt2", "--tasks", "jrt_swde,jrt_drop", "--metadata", BUNDLED,
                    "--cell-timeout", "1", "--out", str(run), "--no-plot")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "2 of 2 cells not done" in proc.stderr
    for task in ("jrt_swde", "jrt_drop"):
        info = json.loads((run / "cells" / "tiny-hf-gpt2" / task / "results.json").read_text())["jrt_cell"]
        assert info["status"] == "failed" and "timed out after 1 s" in info["error"]
    rows = read_rows(run / "leaderboard.csv")
    assert [(r["dataset"], r["status"]) for r in rows] == [("swde", "failed"), ("drop", "failed")]
    assert all("timed out" in r["error"] for r in rows)
