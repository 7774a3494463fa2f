"""Import smoke test: every module (discovered, not listed) imports, is documented, and respects the layers."""

import ast
import importlib
import inspect
import pkgutil
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

import audiointerp

MODULES = ["audiointerp"] + sorted(m.name for m in pkgutil.walk_packages(audiointerp.__path__, "audiointerp."))

# The layers, lowest first: a module may import only from its own layer or a lower one.
LAYERS = [
    {"errors", "settings", "provenance", "config", "metrics", "devices"},  # foundations
    {"audio_io", "processing", "noise", "data", "results_io", "stats", "render"},  # data and features, logs
    {"models", "nmf", "fit", "evaluate"},  # classifiers
    {"learned", "interpret"},  # attribution
    {"masks"},  # masks
    {"scoring"},  # the scoring layer
    {"runner", "explore", "overlap"},  # orchestration: thin siblings over scoring
    {"grid"},  # the experiment grid on Dask, over the runner
    {"figures", "differences", "tables", "__main__"},  # tables, command line
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else module
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"module {module} is in no layer of tests/test_import.py: add it")


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    mod = importlib.import_module(name)
    assert mod.__doc__, f"{name} has no module docstring"


def test_every_module_is_discovered():
    assert len(MODULES) >= 25 and "audiointerp.learned.l2i" in MODULES and "audiointerp.scoring" in MODULES


def test_third_party_stack_imports():
    import captum.attr
    import filelock
    import librosa
    import papermill
    import shap
    import soundfile
    import torchaudio

    assert hasattr(captum.attr, "LayerGradCam") and hasattr(shap, "GradientExplainer")
    assert torchaudio.__version__.startswith("2.11") and soundfile.__libsndfile_version__
    assert librosa.__version__ and papermill.__version__ and filelock.FileLock


def test_public_functions_have_docstrings():
    for name in MODULES[1:]:
        mod = importlib.import_module(name)
        for attr, obj in vars(mod).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert obj.__doc__, f"{name}.{attr} has no docstring"


def test_lower_layers_never_import_higher_ones():
    """data -> features -> attribution -> masks -> scoring -> runner/explore/overlap -> tables: read
    every module's imports (also those inside functions) from its source."""
    bad = []
    for name in MODULES[1:]:
        path = importlib.import_module(name).__file__
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:  # relative: from .x / from ..x
                base = name.split(".")[:-node.level] if not path.endswith("__init__.py") else name.split(".")
                if path.endswith("__init__.py") and node.level > 1:
                    base = name.split(".")[:-(node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("audiointerp"):
                target = node.module
            else:
                continue
            if target == "audiointerp" or not target.startswith("audiointerp."):
                continue
            if _layer(target) > _layer(name):
                bad.append(f"{name} imports {target}")
    assert not bad, bad


def test_no_import_cycle_between_modules():
    """Importing each module alone in a fresh interpreter works (a cycle would fail for one order)."""
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    for name in ("audiointerp.models", "audiointerp.evaluate", "audiointerp.fit", "audiointerp.scoring",
                 "audiointerp.overlap", "audiointerp.explore", "audiointerp.learned"):
        r = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


@pytest.mark.skipif(shutil.which("ruff") is None and not (REPO / ".venv" / "bin" / "ruff").exists(),
                    reason="ruff is not installed (it is in requirements.txt)")
def test_ruff_is_clean():
    """pyflakes, import order and docstrings of public names (pyproject.toml [tool.ruff])."""
    ruff = shutil.which("ruff") or str(REPO / ".venv" / "bin" / "ruff")
    r = subprocess.run([ruff, "check", "audiointerp", "tests", "scripts"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
