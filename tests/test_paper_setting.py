"""The paper's setting and your own: CNN14 fine-tuned from (synthetic) PANNs weights, a classifier class
from a user's file, devices named explicitly."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CLASSES, USER_MODEL, real_root

from audiointerp.errors import CheckpointError, ConfigError


def _panns_checkpoint(path, seed=0):
    """A synthetic checkpoint in the PANNs layout: random weights under PANNs' key names and shapes
    ([out, in, time, mel] kernels, ``bn0`` without the ``.bn`` level, AudioSet's 527 outputs, the
    front-end buffers), as the 16 kHz CNN14 file holds them."""
    from audiointerp.models import Cnn14

    torch.manual_seed(seed)
    state = {}
    for k, v in Cnn14(n_freq=64, n_classes=527).state_dict().items():
        if k.startswith("bn0.bn."):
            k = "bn0." + k[len("bn0.bn."):]
        state[k] = v.transpose(2, 3).contiguous() if v.dim() == 4 else v
    state["spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(257, 1, 512)
    state["logmel_extractor.melW"] = torch.zeros(257, 64)
    torch.save({"model": state, "iteration": 0}, path)
    return path


@pytest.fixture(scope="module")
def panns_file(tmp_path_factory):
    """The synthetic PANNs-format checkpoint (written once: about 320 MB)."""
    return _panns_checkpoint(tmp_path_factory.mktemp("panns") / "Cnn14_16k_mAP=0.438.pth")


@pytest.fixture(scope="module")
def mini_real_root(tmp_path_factory):
    """A tiny ESC-50 folder of real clips: 3 classes x 5 folds x 1 clip (links to the real files)."""
    root = real_root()
    if root is None:
        pytest.skip("ESC50_ROOT is not set: the real-clip tests need the dataset")
    meta = pd.read_csv(root / "meta" / "esc50.csv")
    pick = meta[meta["target"].isin([0, 1, 2])].groupby(["fold", "target"]).head(1).copy()
    out = tmp_path_factory.mktemp("mini_esc50")
    (out / "audio").mkdir()
    (out / "meta").mkdir()
    for fn in pick["filename"]:
        src = next(p for p in (root / "audio" / fn, root / "audio" / fn.replace(".wav", ".flac")) if p.is_file())
        (out / "audio" / src.name).symlink_to(src)
    pick.to_csv(out / "meta" / "esc50.csv", index=False)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("features", ["mel", "stft"])
def test_cnn14_fine_tunes_from_panns_weights_and_is_explained(features, mini_real_root, panns_file, tmp_path,
                                                              monkeypatch):
    from audiointerp.fit import TrainConfig, train
    from audiointerp.models import load_classifier
    from audiointerp.runner import RunConfig, run

    monkeypatch.setenv("ESC50_ROOT", str(mini_real_root))
    panns = panns_file
    out = tmp_path / f"cnn14_{features}.pt"
    cfg = TrainConfig(features=features, architecture="Cnn14", pretrained=str(panns), epochs=1, batch_size=3,
                      lr=1e-4, device="cpu", seed=0)
    m = train(cfg, out, progress=False)
    assert m["device"]["device"] == "cpu" and m["n_train"] == 9
    model, ex, ck = load_classifier(out, device="cpu")
    assert ck["architecture"] == "Cnn14" and ck["training"]["pretrained"] == str(panns)
    assert ex.cfg.kind == features and model.n_freq == ex.cfg.n_freq
    # the convolutions started from the PANNs file (a step of Adam at 1e-4 moves them by about 1e-4)
    start = torch.load(panns, weights_only=False)["model"]["conv_block6.conv2.weight"].transpose(2, 3)
    assert (model.conv_block6.conv2.weight - start).abs().max() < 1e-2
    res = tmp_path / "res"
    run(RunConfig(checkpoint=str(out), methods=["saliency", "gradcam"], limit=2, results=str(res),
                  masks=["topK_30", "bin"]), progress=False)
    df = pd.read_csv(res / f"cnn14_{features}" / "gradcam_clean" / "csvs" / "bin.csv")
    assert len(df) == 4 and df[["FF", "AD", "FidIn"]].notna().all().all()


def test_pretrained_needs_cnn14_and_a_cuda_device_for_amp(esc50_env, tmp_path):
    from audiointerp.fit import TrainConfig, train

    with pytest.raises(ConfigError, match="needs architecture='Cnn14'"):
        train(TrainConfig(pretrained="x.pth", epochs=1), tmp_path / "m.pt", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="amp"):
            train(TrainConfig(amp=True, device="cpu", epochs=1), tmp_path / "m.pt", progress=False)
        with pytest.raises(ConfigError, match="CUDA is not available"):
            train(TrainConfig(device="cuda", epochs=1), tmp_path / "m.pt", progress=False)


def test_your_own_classifier_trains_is_explained_scored_tabulated_and_reloads(esc50_env, tmp_path):
    from audiointerp.fit import TrainConfig, train
    from audiointerp.models import load_classifier
    from audiointerp.runner import RunConfig, run
    from audiointerp.tables import build_tables

    file = tmp_path / "my_models.py"
    file.write_text(USER_MODEL)
    out = tmp_path / "tiny.pt"
    m = train(TrainConfig(architecture=f"{file}:TinyNet", epochs=1, limit=6, device="cpu"), out, progress=False)
    assert m["n_train"] == 6
    model, ex, ck = load_classifier(out)
    assert ck["architecture"] == f"{file}:TinyNet" and ck["class_names"] == CLASSES
    res = tmp_path / "res"
    run(RunConfig(checkpoint=str(out), methods=["saliency", "gradcam", "shap"], limit=2, shap_nsamples=2,
                  results=str(res)), progress=False)
    info = json.loads((res / "tiny" / "gradcam_clean" / "run.json").read_text())
    assert info["status"] == "partial" and info["n_clips_done"] == 2
    t = build_tables(res, tmp_path / "sup", n_resamples=10, figures=False)
    assert set(t["summary"].reset_index()["method"]) == {"saliency", "gradcam", "shap"}
    assert np.isfinite(t["summary"]["FF"]).all()


def test_a_classifier_that_breaks_the_contract_is_refused(esc50_env, tmp_path):
    from audiointerp.fit import TrainConfig, train
    from audiointerp.models import build_model, load_classifier, save_checkpoint
    from audiointerp.processing import FeatureConfig

    file = tmp_path / "my_models.py"
    file.write_text(USER_MODEL)
    with pytest.raises(ConfigError, match=r"returns \(2,\)"):
        train(TrainConfig(architecture=f"{file}:Broken", epochs=1, limit=3), tmp_path / "b.pt", progress=False)
    assert not (tmp_path / "b.pt").exists()
    path = save_checkpoint(tmp_path / "b.pt", build_model(f"{file}:Broken"), {"n_freq": 64, "n_classes": 3},
                           FeatureConfig(kind="mel", duration=1.0), CLASSES)
    with pytest.raises(CheckpointError, match="contract"):
        load_classifier(path)
    with pytest.raises(ConfigError, match="cannot import the architecture"):
        train(TrainConfig(architecture=f"{tmp_path}/missing.py:Net", epochs=1, limit=3), tmp_path / "c.pt",
              progress=False)


def test_every_training_job_takes_an_explicit_cpu_device(esc50_env, tmp_path):
    from audiointerp.fit import TrainConfig, train

    m = train(TrainConfig(epochs=1, limit=3, device="cpu", arch_args={"channels": (2, 4, 4, 4)}), tmp_path / "m.pt",
              progress=False)
    assert m["device"] == {"device": "cpu", "type": "cpu", "name": "cpu", "torch": torch.__version__, "cuda": None}
    # the state of a run resumes on another device name (same configuration otherwise)
    shutil.copy(tmp_path / "m.pt.state.pt", tmp_path / "n.pt.state.pt")
    m2 = train(TrainConfig(epochs=1, limit=3, device="auto", arch_args={"channels": (2, 4, 4, 4)}), tmp_path / "n.pt",
               progress=False)
    assert m2["history"] == m["history"]
