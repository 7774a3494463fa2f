"""Import smoke test: every module imports and exposes its public entry points."""

import importlib

import pytest

MODULES = ["audiointerp", "audiointerp.audio_io", "audiointerp.data", "audiointerp.processing",
           "audiointerp.models", "audiointerp.fit", "audiointerp.interpret", "audiointerp.masks",
           "audiointerp.metrics", "audiointerp.runner", "audiointerp.tables", "audiointerp.__main__"]


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    mod = importlib.import_module(name)
    assert mod.__doc__, f"{name} has no module docstring"


def test_third_party_stack_imports():
    import captum.attr
    import librosa
    import papermill
    import shap
    import soundfile
    import torchaudio

    assert hasattr(captum.attr, "LayerGradCam") and hasattr(shap, "GradientExplainer")
    assert torchaudio.__version__.startswith("2.11") and soundfile.__libsndfile_version__
    assert librosa.__version__ and papermill.__version__


def test_public_functions_have_docstrings():
    import inspect

    for name in MODULES[1:-1]:
        mod = importlib.import_module(name)
        for attr, obj in vars(mod).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert obj.__doc__, f"{name}.{attr} has no docstring"
