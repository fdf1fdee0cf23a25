"""Registration with stock lm-eval: the startup hook in fresh interpreters, its opt-out, the jrt-eval
command, and the lm-eval internals the hook relies on (this test fails loudly if an upgrade moves them)."""
import inspect
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

from jrt_eval.specs import all_task_names

GROUPS = {"jrt", "jrt_twice", "jrt_all", "jrt_table1", "jrt_table1_twice"}
LIST_TASKS = (
    "import json; from lm_eval.tasks import TaskManager; "
    "tm = TaskManager(include_defaults=False); "
    "print(json.dumps(sorted(n for n in tm.all_tasks if n.startswith('jrt'))))"
)


def run_py(code, env_extra=None, cwd="/"):
    env = {**os.environ, **(env_extra or {})}
    env.pop("PYTHONPATH", None)  # the installed package, not the source tree, must provide everything
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_fresh_interpreter_sees_every_task_and_group():
    names = json.loads(run_py(LIST_TASKS).strip().splitlines()[-1])
    assert set(names) == set(all_task_names()) | GROUPS


def test_opt_out_switches_the_hook_off_but_not_the_explicit_activation():
    off = json.loads(run_py(LIST_TASKS, {"JRT_EVAL_AUTOLOAD": "0"}).strip().splitlines()[-1])
    assert off == []
    forced = run_py("import jrt_eval._autoload as a; a.activate(); " + LIST_TASKS, {"JRT_EVAL_AUTOLOAD": "0"})
    assert set(json.loads(forced.strip().splitlines()[-1])) == set(all_task_names()) | GROUPS


def test_stock_models_stay_visible_next_to_ours():
    out = run_py(
        "from lm_eval.api.registry import get_model, model_registry\n"
        "print(get_model('hf').__name__)\n"
        "print(sorted(n for n in ['based','jrt_rnn','mamba','mamba2','gla','attn','jrt_auto'] if n in model_registry))\n"
        "print('mamba_ssm' in model_registry, 'vllm' in model_registry)"
    ).strip().splitlines()
    assert out[-3] == "HFLM"
    assert out[-2] == str(sorted(["based", "jrt_rnn", "mamba", "mamba2", "gla", "attn", "jrt_auto"]))
    assert out[-1] == "True True"


def test_user_include_path_overrides_our_tasks(tmp_path):
    (tmp_path / "mine.yaml").write_text("task: jrt_swde\ndataset_path: x\noutput_type: generate_until\n")
    out = run_py(
        "from lm_eval.tasks import TaskManager\n"
        f"tm = TaskManager(include_defaults=False, include_path={str(tmp_path)!r})\n"
        "print(tm._index['jrt_swde'].yaml_path)\nprint('jrt_fda' in tm.all_tasks)"
    ).strip().splitlines()
    assert out[-2] == str(tmp_path / "mine.yaml") and out[-1] == "True"


def test_hook_costs_nothing_until_lm_eval_is_imported():
    out = run_py("import sys; print(sorted(m for m in sys.modules if m.startswith(('lm_eval', 'torch', 'jrt_eval'))))")
    assert "lm_eval" not in out and "torch" not in out


def test_lm_eval_internals_the_hook_relies_on():
    """If this fails after an lm-eval upgrade, jrt_eval/_autoload.py needs updating."""
    import lm_eval.models
    from lm_eval.api import registry
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.config.task import TaskConfig
    from lm_eval.tasks.manager import TaskManager

    assert "include_path" in inspect.signature(TaskManager.__init__).parameters
    assert "target" in inspect.signature(registry.Registry.register).parameters
    assert isinstance(lm_eval.models.MODEL_MAPPING, dict) and "hf" in lm_eval.models.MODEL_MAPPING
    assert hasattr(registry, "model_registry") and hasattr(registry, "get_model")
    fields = TaskConfig.__dataclass_fields__
    for name in ("custom_dataset", "dataset_kwargs", "process_results", "metadata", "generation_kwargs"):
        assert name in fields
    # custom_dataset receives the task metadata (into which the CLI merges --model_args)
    assert "self.config.metadata" in inspect.getsource(ConfigurableTask.download)


@pytest.mark.slow
def test_stock_lm_eval_ls_tasks_lists_ours():
    env = {**os.environ}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(Path(sys.executable).parent / "lm_eval"), "ls", "tasks"], capture_output=True,
                          text=True, env=env, cwd="/", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("jrt_swde", "jrt_swde_twice", "jrt_nq_2048_twice", "jrt_all"):
        assert f"|{name} " in proc.stdout


@pytest.mark.slow
def test_wheel_ships_the_hook_tasks_and_assets(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and "Could not find a version" in proc.stderr:
        pytest.skip("no package index to build the wheel's build backend")
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("jrt_eval-*.whl"))).namelist()
    assert "jrt_eval_autoload.pth" in names and "jrt_eval_autoload.start" in names
    for needed in ("jrt_eval/tasks/jrt_swde.yaml", "jrt_eval/tasks/_jrt_task_template_yaml",
                   "jrt_eval/tasks/groups/jrt_all.yaml", "jrt_eval/kernels/based/reference.py",
                   "jrt_eval/model_adapters/base.py", "jrt_eval/assets/tokenizers/gpt2/tokenizer.json",
                   "jrt_eval/assets/samples/hazyresearch/based-fda/validation.jsonl"):
        assert needed in names, needed
    assert not any(n.startswith(("kernels/", "tasks/", "model_adapters/", "tests/")) for n in names)


def test_source_tree_folders_never_shadow_packages_of_the_same_name(tmp_path):
    # The design card's top-level kernels/, model_adapters/ and tasks/ hold no __init__.py, so from the
    # repository root (on sys.path under `python -m pytest`, `python -m lm_eval`, the benchmarks) they are
    # namespace portions that any installed package of that name outranks. transformers >= 5.25 imports
    # Hugging Face's `kernels` package; a regular `kernels/` here broke every Mamba model.
    names = ("kernels", "model_adapters", "tasks")
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("OTHER = True\n")
    code = "import importlib; print([getattr(importlib.import_module(n), 'OTHER', False) for n in %r])" % (names,)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[True, True, True]"
    assert not any((ROOT / name / "__init__.py").exists() for name in names)
