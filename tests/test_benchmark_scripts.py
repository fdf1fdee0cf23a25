"""The GPU check scripts still run end to end (``--smoke``: CPU, toy widths), so a device lease is not spent
finding out that one of them broke. ~2 min."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, out: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_gpu_check_ssm_smoke(tmp_path):
    _run("gpu_check_ssm.py", tmp_path, "--profile", "mamba2,mamba,gla")
    results = json.loads((tmp_path / "gpu_check_ssm.json").read_text())
    errors = {k: v for k, v in results.items() if "ERROR" in str(v)}
    assert not errors, errors
    for key in ("kernel.ssd_step", "parity.mamba2.padded_vs_alone.greedy_identical",
                "speed.mamba2.L40.ours_float32_s_per_batch", "profile.gla.auto.prefill_s"):
        assert key in results, key


def test_gpu_check_hazy_smoke(tmp_path):
    pytest.importorskip("triton")
    _run("gpu_check_hazy.py", tmp_path)
    results = json.loads((tmp_path / "gpu_check_hazy.json").read_text())["results"]
    assert "error" not in results, results.get("error")
    assert any("graphed vs eager" in k for k in results["parity"])


def test_decode_loop_smoke():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "decode_loop.py"), "--smoke"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tokens identical: True" in proc.stdout


def test_gla_decode_pack_smoke():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gla_decode_pack.py"), "--smoke"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT / "benchmarks")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "identical on 100% of rows" in proc.stdout, proc.stdout


def test_gla_gate_smoke():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gla_gate.py"), "--smoke"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT / "benchmarks")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "identical on 100% of rows" in proc.stdout, proc.stdout


def test_gla_chunk_smoke():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gla_chunk.py"), "--smoke"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT / "benchmarks")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "identical on 100% of rows" in proc.stdout, proc.stdout


def test_gpu_e2e_smoke(tmp_path):
    """benchmarks/gpu_e2e.py: checkpoints written in the published formats, the stock ``lm_eval`` CLI on two
    families and through jrt_auto, then one sweep over them (one document per task, CPU)."""
    _run("gpu_e2e.py", tmp_path, "--only", "paper,sweep", "--families", "mamba2,gla")
    summary = (tmp_path / "summary.txt").read_text()
    lines = [line for line in summary.splitlines() if line.startswith("paper lm_eval --model ")]
    assert [line.split()[3] for line in lines] == ["mamba2", "gla", "jrt_auto"], summary
    assert all("exit 0," in line and "jrt_swde_twice 0.0 (n 1)" in line for line in lines), summary
    assert "paper sweep: exit 0" in summary, summary
    assert "status ok 12" in summary, summary


def test_floors_count_the_published_shapes():
    """benchmarks/floors.py: the GLA-1.3B linear weights and fp32 states are counted from the model's own
    shapes, and the floor behind the README's GLA statement stays where the README puts it (~0.31 s)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import floors

    sh = floors.shapes("gla")
    per_layer = 2048 * (1024 + 1024 + 2048 + 2048 + 16 + 2048 + 3 * 5632) + 1024 * 16
    assert sh.body_linear == 24 * per_layer and sh.head == 32000 * 2048
    assert sh.state_bytes_per_row == 24 * 4 * 256 * 512 * 4
    pre, dec = floors.floor_seconds(sh, 32, 1900, 48, 700.0, 3.0)
    assert 0.20 < pre < 0.23 and 0.08 < dec < 0.10
    m2 = floors.shapes("mamba2")  # the SSM state in bf16 (the default state_dtype="model"), or float32
    assert m2.state_bytes_per_row == 24 * (24 * 64 * 128 * 2 + 1792 * 3 * 2)
    assert floors.shapes("mamba2", 4).state_bytes_per_row == 24 * (24 * 64 * 128 * 4 + 1792 * 3 * 2)
