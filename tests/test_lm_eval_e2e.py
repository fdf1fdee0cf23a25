"""End to end through real lm-eval subprocesses, offline: the README's command with a stock `hf` model on
the bundled samples, and the jrt-eval command with task options."""
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ref_oracle

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def run_cli(exe, args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(BIN / exe), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    results = glob.glob(str(tmp_path / "out" / "**" / "results_*.json"), recursive=True)
    assert len(results) == 1, "lm-eval only logs (never raises) when it cannot write results"
    samples = {}
    for path in glob.glob(str(tmp_path / "out" / "**" / "samples_*.jsonl"), recursive=True):
        task = Path(path).name[len("samples_"):].rsplit("_", 1)[0]
        samples[task] = [json.loads(line) for line in open(path)]
    return json.loads(Path(results[0]).read_text()), samples, proc


def test_readme_command_with_a_stock_hf_model(tiny_hf_gpt2, tmp_path):
    results, samples, _ = run_cli("lm_eval", [
        "--model", "hf", "--model_args", f"pretrained={tiny_hf_gpt2}", "--tasks", "jrt_swde,jrt_swde_twice",
        "--metadata", '{"jrt_data_dir": "bundled"}', "--device", "cpu", "--batch_size", "4",
        "--output_path", str(tmp_path / "out"), "--log_samples",
    ], tmp_path)
    for task, oracle in (("jrt_swde", ref_oracle.swde_default), ("jrt_swde_twice", ref_oracle.swde_twice)):
        res = results["results"][task]
        assert 0.0 <= res["contains,none"] <= 1.0
        assert results["n-samples"][task]["effective"] == 6  # 7 records, one "R" rating dropped by the cut
        assert len(samples[task]) == 6
        for s in samples[task]:
            prompt = s["arguments"]["gen_args_0"]["arg_0"]
            assert prompt == s["doc"]["jrt_prompt"] == oracle(s["doc"])  # REF's doc_to_text on the cut record
            assert s["arguments"]["gen_args_0"]["arg_1"]["until"] == ["\n"]
            assert s["arguments"]["gen_args_0"]["arg_1"]["max_gen_toks"] == 48
            assert s["contains"] == int(any(lab.lower() in s["filtered_resps"][0].lower() for lab in s["doc"]["jrt_labels"]))
    twice = samples["jrt_swde_twice"][0]["arguments"]["gen_args_0"]["arg_0"]
    assert twice.startswith("Information about ")


def test_jrt_eval_command_passes_task_options(tiny_hf_gpt2, tmp_path):
    results, samples, _ = run_cli("jrt-eval", [
        "--model", "hf", "--model_args", f"pretrained={tiny_hf_gpt2}", "--tasks", "jrt_drop_twice,jrt_nq_512",
        "--metadata", '{"jrt_data_dir": "bundled", "jrt_repeats": 3, "context_length": 120, "answer_length": 20}',
        "--device", "cpu", "--batch_size", "2", "--output_path", str(tmp_path / "out"), "--log_samples",
    ], tmp_path)
    assert set(results["results"]) == {"jrt_drop_twice", "jrt_nq_512"}
    for s in samples["jrt_drop_twice"]:
        prompt, body = s["arguments"]["gen_args_0"]["arg_0"], s["doc"]["context"].strip().strip(".").strip() + "."
        assert prompt.count(body) == 3  # three copies of the 100-token window
    cfg = results["configs"]["jrt_nq_512"]["metadata"]
    assert cfg["jrt_repeats"] == 3 and cfg["context_length"] == 120
