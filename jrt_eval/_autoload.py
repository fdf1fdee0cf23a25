"""Make lm-eval see jrt-eval's models and tasks without extra flags.

lm-eval 0.4.x has no plugin discovery: models come only from its registry and tasks only from
``lm_eval/tasks`` plus ``--include_path``. This module is run at interpreter start by the
``jrt_eval_autoload.pth`` file that the wheel puts in site-packages. It imports nothing heavy; it
adds a post-import hook that acts only when lm-eval itself gets imported:

* after ``lm_eval.api.registry`` executes: import ``lm_eval.models`` first (its stock lazy table is
  filled only while the registry is empty, so registering before it would hide ``hf``), then
  register our ``lm_eval.models`` entry points as lazy ``"module:Class"`` strings, skipping any name
  that is already taken (lm-eval's own models always win);
* after ``lm_eval.tasks.manager`` executes: wrap ``TaskManager.__init__`` so that our task folders
  (our ``lm_eval.tasks`` entry points) are scanned before the user's ``--include_path``, which
  therefore still overrides ours.

The entry points in pyproject.toml are the single source of truth, and lm-eval releases that read
them natively make this hook step aside. Set ``JRT_EVAL_AUTOLOAD=0`` to switch it off; the
``jrt-eval`` command and ``jrt_eval.register()`` still work then. Hook errors are reported on
stderr and never break the importing program.
"""
import os
import sys

DIST_NAME = "jrt-eval"
_REGISTRY = "lm_eval.api.registry"
_MANAGER = "lm_eval.tasks.manager"
_WRAPPED_FLAG = "_jrt_eval_wrapped"


def enabled() -> bool:
    return os.environ.get("JRT_EVAL_AUTOLOAD", "1").strip().lower() not in ("0", "false", "no", "off")


def _warn(msg: str) -> None:
    print(f"jrt-eval autoload: {msg}", file=sys.stderr)


def _entry_points(group: str):
    from importlib import metadata

    try:
        return [ep for ep in metadata.distribution(DIST_NAME).entry_points if ep.group == group]
    except metadata.PackageNotFoundError:
        # Running from a source tree without installing: fall back to the built-in table.
        return [metadata.EntryPoint(n, v, group) for n, v in _FALLBACK.get(group, {}).items()]


# Same content as pyproject.toml's entry points, used only when the distribution is not installed.
_FALLBACK = {
    "lm_eval.models": {
        "based": "jrt_eval.model_adapters.lm:BasedLM",
        "jrt_rnn": "jrt_eval.model_adapters.lm:JRTRNNLM",
        "mamba": "jrt_eval.model_adapters.lm:MambaLM",
        "mamba2": "jrt_eval.model_adapters.lm:Mamba2LM",
        "gla": "jrt_eval.model_adapters.lm:GLALM",
        "attn": "jrt_eval.model_adapters.lm:AttnLM",
        "jrt_auto": "jrt_eval.model_adapters.lm:AutoJRTLM",
    },
    "lm_eval.tasks": {"jrt": "jrt_eval.tasks"},
}


_task_dirs_cache: list = []


def task_dirs() -> list:
    """Folders named by our ``lm_eval.tasks`` entry points (packages whose dirs hold YAMLs), looked up once
    per process: every TaskManager construction asks."""
    if not _task_dirs_cache:
        _task_dirs_cache.extend(_find_task_dirs())
    return list(_task_dirs_cache)


def _find_task_dirs() -> list:
    import importlib.util

    dirs = []
    for ep in _entry_points("lm_eval.tasks"):
        spec = importlib.util.find_spec(ep.value)
        if spec is None or not spec.submodule_search_locations:
            _warn(f"task entry point {ep.name}={ep.value} is not a package; skipped")
            continue
        dirs.extend(str(p) for p in spec.submodule_search_locations)
    return dirs


def register_models(registry_module) -> list:
    """Register our models as lazy placeholders; returns the names added."""
    import lm_eval.models  # noqa: F401  (fills the stock table while it is still possible)

    registry = registry_module.model_registry
    added = []
    for ep in _entry_points("lm_eval.models"):
        if ep.name in registry:
            continue  # taken by lm-eval itself, or already registered (native plugin support)
        registry.register(ep.name, target=ep.value)
        added.append(ep.name)
    return added


def wrap_task_manager(manager_module) -> bool:
    """Prepend our task folders to every TaskManager's include_path; False if nothing to do."""
    import functools
    import inspect

    cls = manager_module.TaskManager
    init = cls.__init__
    if getattr(init, _WRAPPED_FLAG, False):
        return False
    if any("entry_point" in name.lower() for name in vars(manager_module)):
        return False  # this lm-eval scans task entry points itself
    sig = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        user = bound.arguments.get("include_path")
        user = [] if user is None else list(user) if isinstance(user, (list, tuple)) else [user]
        ours = [d for d in task_dirs() if d not in [str(u) for u in user]]
        bound.arguments["include_path"] = ours + user
        return init(*bound.args, **bound.kwargs)

    setattr(__init__, _WRAPPED_FLAG, True)
    cls.__init__ = __init__
    return True


_HOOKS = {_REGISTRY: register_models, _MANAGER: wrap_task_manager}


class _HookedLoader:
    """Delegates to the real loader, then runs our hook on the freshly executed module."""

    def __init__(self, loader, hook):
        self._loader = loader
        self._hook = hook

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _run_hook(self._hook, module)


class _PostImportFinder:
    """A meta-path finder that only wraps the loaders of the two lm-eval modules we hook."""

    _busy = set()

    def find_spec(self, name, path=None, target=None):
        hook = _HOOKS.get(name)
        if hook is None or name in self._busy:
            return None
        self._busy.add(name)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = _HookedLoader(spec.loader, hook)
                    return spec
            return None
        finally:
            self._busy.discard(name)


def _run_hook(hook, module) -> None:
    try:
        hook(module)
    except Exception as exc:  # never break the user's program
        _warn(f"{hook.__name__} failed ({type(exc).__name__}: {exc}); jrt-eval models/tasks may be missing")


def install() -> None:
    """Called from the .pth at interpreter start: arm the hooks (no-op when disabled)."""
    if enabled():
        activate()


def activate() -> None:
    """Arm the hooks regardless of JRT_EVAL_AUTOLOAD; apply at once to modules already imported."""
    if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())
    for name, hook in _HOOKS.items():
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__spec__", None) is not None:
            _run_hook(hook, module)
