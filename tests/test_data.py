"""Dataset loading (local copies in the hub's layouts, bundled samples), validation errors, and the
records a task ends up scoring."""
import json
import sys

import pytest
from conftest import ROOT, shared_path

from jrt_eval.data import (
    BUNDLED_SAMPLES,
    DataError,
    TaskOptions,
    build_records,
    load_records,
    load_task_dataset,
)
from jrt_eval.prompting import build_prompt
from jrt_eval.specs import DATASETS, all_task_names

FDA = DATASETS["fda"]


def _fda_rows():
    return [json.loads(x) for x in (BUNDLED_SAMPLES / FDA.hub_path / "validation.jsonl").read_text().splitlines()]


def test_hub_snapshot_layout_with_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "hazyresearch" / "based-fda" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(_fda_rows()), folder / "validation-00000-of-00001.parquet")
    assert load_records(FDA, str(tmp_path)) == _fda_rows()


def test_short_folder_name_with_jsonl_and_env_var(tmp_path, monkeypatch):
    (tmp_path / "based-fda").mkdir()
    (tmp_path / "based-fda" / "validation.jsonl").write_text("\n".join(json.dumps(r) for r in _fda_rows()))
    monkeypatch.setenv("JRT_EVAL_DATA_DIR", str(tmp_path))
    assert load_records(FDA) == _fda_rows()


def test_missing_dataset_in_a_data_dir_is_an_error(tmp_path):
    with pytest.raises(DataError, match="not found in data dir"):
        load_records(FDA, str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        load_records(FDA, str(tmp_path / "nope"))
    (tmp_path / "based-fda").mkdir()
    with pytest.raises(DataError, match="no validation"):
        load_records(FDA, str(tmp_path))


def test_hub_failure_names_the_offline_way_out(monkeypatch):
    monkeypatch.delenv("JRT_EVAL_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="JRT_EVAL_DATA_DIR"):
        load_records(FDA)  # HF_DATASETS_OFFLINE=1 in tests: the hub is unreachable


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.pop("key"), "missing field 'key'"),
    (lambda r: r.update(value=3), "field 'value' must be a string"),
    (lambda r: r.update(text="  \n"), "empty context"),
])
def test_malformed_records_are_named(mutate, message):
    rows = _fda_rows()
    mutate(rows[1])
    with pytest.raises(DataError, match=message):
        build_records("fda", "default", rows, TaskOptions(cutting_context=False))


def test_answers_must_be_a_non_empty_list():
    rows = [dict(context="c", question="q", orig_question="o", answers=[])]
    with pytest.raises(DataError, match="non-empty list"):
        build_records("drop", "default", rows, TaskOptions(cutting_context=False))


def test_twice_forms_need_their_extra_fields():
    rows = [dict(context="c text", question="q", answers=["a"])]
    build_records("drop", "default", rows, TaskOptions(cutting_context=False))
    with pytest.raises(DataError, match="orig_question"):
        build_records("drop", "twice", rows, TaskOptions(cutting_context=False))


def test_options_from_metadata():
    opts = TaskOptions.from_metadata({"pretrained": "hazyresearch/based-360m", "cutting_context": "True",
                                      "context_length": "512", "jrt_repeats": 3, "jrt_layout": "literal"})
    assert (opts.tokenizer, opts.context_length, opts.repeats, opts.layout) == ("gpt2", 512, 3, "literal")
    assert TaskOptions.from_metadata({"cutting_context": False}).tokenizer is None
    for bad in ({"jrt_layout": "x"}, {"jrt_protocol": "x"}, {"jrt_repeats": 0}):
        with pytest.raises(ValueError):
            TaskOptions.from_metadata({"cutting_context": False, **bad})


def test_drop_counts_and_prompts(gpt2_tokenizer):
    rows = [json.loads(x) for x in (BUNDLED_SAMPLES / DATASETS["swde"].hub_path / "validation.jsonl").read_text().splitlines()]
    docs, stats = build_records("swde", "twice", rows, TaskOptions(tokenizer="gpt2"), gpt2_tokenizer)
    assert stats.total == 7 and stats.dropped_short_answer == 1 and stats.scored == len(docs) == 6
    for doc in docs:
        assert doc["jrt_prompt"] == build_prompt("swde", doc, "twice")
        assert doc["jrt_labels"] == [doc["value"]] and doc["jrt_target"] == doc["value"]
    # the long page was cut: its window is shorter than the raw text
    long_doc = next(d for d in docs if d["doc_id"] == "0065-director")
    assert len(long_doc["text"]) < len(next(r for r in rows if r["doc_id"] == "0065-director")["text"])


@pytest.mark.parametrize("task", sorted(set(all_task_names())))
def test_every_task_loads_from_the_bundled_samples(task):
    import yaml

    cfg = yaml.safe_load(
        "\n".join(l for l in (ROOT / "tasks" / f"{task}.yaml").read_text().splitlines() if "!function" not in l))
    kw = cfg["dataset_kwargs"]
    ds = load_task_dataset(kw["jrt_dataset"], kw["jrt_form"], pretrained="hazyresearch/based-360m",
                           jrt_data_dir="bundled")["validation"]
    assert len(ds) >= 2 and all(p for p in ds["jrt_prompt"])
    assert ("_twice" in task) == (kw["jrt_form"] == "twice")


def test_bundled_samples_are_what_the_build_script_makes(tmp_path):
    shared = shared_path("data")
    sys.path.insert(0, str(ROOT / "scripts"))
    import build_samples

    for hub_id, rows in build_samples.build_all(shared).items():
        on_disk = (BUNDLED_SAMPLES / hub_id / "validation.jsonl").read_text(encoding="utf-8")
        assert on_disk == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), hub_id
