"""The paper's setting and your own: CNN14 fine-tuned from (synthetic) PANNs weights, a classifier class
from a user's file, devices named explicitly."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CLASSES, USER_MODEL, real_root

from audiointerp.devices import cpu_model
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
    assert set(t["summary"].reset_index()["method"]) == {"saliency", "gradcam", "shap (n2)"}
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
    assert m["device"] == {"device": "cpu", "type": "cpu", "name": "cpu", "cpu": cpu_model(), "torch": torch.__version__,
                           "cuda": None}
    # the state of a run resumes on another device name (same configuration otherwise)
    shutil.copy(tmp_path / "m.pt.state.pt", tmp_path / "n.pt.state.pt")
    m2 = train(TrainConfig(epochs=1, limit=3, device="auto", arch_args={"channels": (2, 4, 4, 4)}), tmp_path / "n.pt",
               progress=False)
    assert m2["history"] == m["history"]


def test_every_job_takes_device_cpu_and_refuses_an_absent_device(esc50_env, toy_checkpoint, tmp_path):
    """Runner, evaluation, explore, overlap and interpreter training each take device="cpu" explicitly;
    an absent CUDA device is one clear error."""
    from audiointerp.evaluate import evaluate_checkpoint
    from audiointerp.explore import explain_clip, load_example
    from audiointerp.learned import InterpreterTrainConfig, train_interpreter
    from audiointerp.models import load_classifier
    from audiointerp.overlap import overlap_test
    from audiointerp.runner import RunConfig, run

    out = run(RunConfig(checkpoint=str(toy_checkpoint), methods=["gradcam"], limit=1, results=str(tmp_path / "r"),
                        masks=["bin"], device="cpu"), progress=False)
    info = json.loads((tmp_path / "r" / "toy_mel" / "gradcam_clean" / "run.json").read_text())
    assert info["device"]["device"] == "cpu" and out["gradcam"]["n_clips_done"] == 1
    assert evaluate_checkpoint(toy_checkpoint, (5,), n_resamples=10, device="cpu").n == 6
    model, ex, _ = load_classifier(toy_checkpoint, device="cpu")
    wav, _ = load_example("5-100500-A-0.wav", esc50_env, 16000, 1.0)
    assert explain_clip(model, ex, wav, "saliency", "bin").audio_in.device.type == "cpu"
    assert len(overlap_test(toy_checkpoint, ["saliency"], n_pairs=2, progress=False, device="cpu")) == 6
    summary = train_interpreter(InterpreterTrainConfig(kind="piq", checkpoint=str(toy_checkpoint), epochs=1,
                                                       limit=3, device="cpu", args={"width": 8, "dim": 8}),
                                tmp_path / "piq.pt", progress=False)
    assert summary["epochs_run"] == 1
    if not torch.cuda.is_available():
        for call in (lambda: load_classifier(toy_checkpoint, device="cuda:0"),
                     lambda: evaluate_checkpoint(toy_checkpoint, (5,), device="cuda"),
                     lambda: run(RunConfig(checkpoint=str(toy_checkpoint), methods=["gradcam"], limit=1,
                                           results=str(tmp_path / "r2"), device="cuda:1"), progress=False)):
            with pytest.raises(ConfigError, match="CUDA is not available"):
                call()


def test_your_own_dataset_goes_through_train_run_and_tables(tmp_path, monkeypatch):
    """A folder laid out like ESC-50 with its own csv name, 3 classes, 2-s clips at 22.05 kHz and
    its own fold split (1-2 train, 3 validation, 4 test) trains, runs and tabulates."""
    import soundfile as sf

    from audiointerp.fit import TrainConfig, train
    from audiointerp.models import load_classifier
    from audiointerp.runner import RunConfig, run
    from audiointerp.tables import build_tables

    root, sr = tmp_path / "birds", 22050
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rng = np.random.default_rng(0)
    rows, t = [], np.arange(2 * sr) / sr
    for fold in range(1, 5):
        for c, name in enumerate(["wren", "owl", "gull"]):
            for j in range(2):
                fn = f"bird-{fold}{c}{j}.wav"
                y = 0.4 * np.sin(2 * np.pi * 500 * (c + 1) * t + rng.uniform(0, 6)) + 0.05 * rng.standard_normal(len(t))
                sf.write(root / "audio" / fn, y.astype(np.float32), sr)
                rows.append({"filename": fn, "fold": fold, "target": c, "category": name})
    pd.DataFrame(rows).to_csv(root / "meta" / "birds.csv", index=False)
    monkeypatch.setenv("ESC50_ROOT", str(root))
    out = tmp_path / "birds_mel.pt"
    m = train(TrainConfig(metadata="birds.csv", sample_rate=sr, duration=2.0, train_folds=(1, 2), val_folds=(3,),
                          test_folds=(4,), epochs=2, device="cpu", arch_args={"channels": (4, 8, 8, 8)}), out,
              progress=False)
    assert m["n_train"] == 12 and m["n_test"] == 6
    _, ex, ck = load_classifier(out)
    assert ex.cfg.sample_rate == sr and ex.cfg.duration == 2.0 and ck["class_names"] == ["wren", "owl", "gull"]
    res = tmp_path / "res"
    run(RunConfig(checkpoint=str(out), methods=["saliency", "gradcam", "shap"], fold=4, train_folds=(1, 2),
                  metadata="birds.csv", shap_nsamples=2, results=str(res), device="cpu"), progress=False)
    info = json.loads((res / "birds_mel" / "shap-n2_clean" / "run.json").read_text())
    assert info["status"] == "complete" and info["n_clips_fold"] == 6 and info["key"]["train_folds"] == [1, 2]
    t = build_tables(res, tmp_path / "sup", n_resamples=10, figures=False)
    assert set(t["summary"]["clips"]) == {6}
    with pytest.raises(Exception, match="fold 6 has no clips"):
        run(RunConfig(checkpoint=str(out), methods=["saliency"], fold=6, metadata="birds.csv", results=str(res)),
            progress=False)
