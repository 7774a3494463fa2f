"""Smoke run of the whole pipeline on a handful of real ESC-50 clips (needs ESC50_ROOT)."""

import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, real_root

ROOT = real_root()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(ROOT is None, reason="ESC50_ROOT is unset or has no meta/esc50.csv + audio/: "
                                                      "set it to the ESC-50 folder to run real-clip tests")]
WEIGHTS = {"mel": REPO / "weights" / "compact_mel.pt", "stft": REPO / "weights" / "compact_stft.pt"}
# the best candidates measured before the promotion of issue 15 (weights/candidates/compact_*_r3.pt, fold 5):
# a default below them would be a regression
FLOORS = {"mel": 0.7925, "stft": 0.7775}
LEARNED_KINDS = ("l2i", "piq", "lmac", "lmac_ft")


def need(kind):
    if not WEIGHTS[kind].is_file():
        pytest.skip(f"{WEIGHTS[kind]} not trained yet (make train-{kind})")
    return WEIGHTS[kind]


def test_real_clips_load_at_the_model_rate():
    from audiointerp.data import ESC50

    ds = ESC50(ROOT, folds=(5,))
    assert len(ds) == 400 and len(ds.class_names) == 50
    for i in (0, 1, 399):
        w, label = ds[i]
        assert w.shape == (80000,) and w.dtype == torch.float32 and 0 <= label < 50
        assert w.abs().max().item() == pytest.approx(1.0)


def test_pipeline_on_a_few_real_clips(tmp_path):
    from audiointerp.masks import MASK_NAMES
    from audiointerp.runner import RunConfig, run

    ckpt = need("mel")
    out = run(RunConfig(checkpoint=str(ckpt), methods=["saliency", "gradcam", "shap"], limit=3, shap_nsamples=4,
                        results=str(tmp_path), root=str(ROOT)), progress=False)
    for method in ("saliency", "gradcam", "shap"):
        folder = tmp_path / "compact_mel" / (f"{method}-n4_clean" if method == "shap" else f"{method}_clean")
        for mask in MASK_NAMES:
            df = pd.read_csv(folder / "csvs" / f"{mask}.csv")
            for domain in ("spectrogram", "audio"):
                assert sorted(df.loc[df["domain"] == domain, "sample"]) == [0, 1, 2]
            assert np.isfinite(df[["FF", "AD", "AG", "SPS", "COMP"]].to_numpy()).all()
            assert ((df["AD"] >= 0) & (df["AD"] <= 100)).all()
            assert (df["recon_snr_db"] > 100).all()  # the gain re-synthesis gives the clip back
        a = np.load(next((folder / "attributions").glob("*.npy")))
        assert a.shape == (1, 64, 501) and np.abs(a).sum() > 0
    assert 0 <= out["_accuracy"] <= 1


NOISES = os.environ.get("AUDIOINTERP_NOISES")


@pytest.mark.skipif(not (NOISES and os.path.isdir(NOISES)), reason="AUDIOINTERP_NOISES not set")
def test_real_clips_under_real_noise(tmp_path):
    """The horse whinny (44.1 kHz stereo) mixed at 0 dB into real clips: accuracy logged, both domains."""
    import json

    from audiointerp.runner import RunConfig, run

    ckpt = need("mel")
    out = run(RunConfig(checkpoint=str(ckpt), methods=["gradcam"], condition="horse", snr_db=0.0, limit=2,
                        masks=["topK_30_pos"], results=str(tmp_path), root=str(ROOT)), progress=False)
    folder = tmp_path / "compact_mel" / "gradcam_horse_snr0dB"
    info = json.loads((folder / "run.json").read_text())
    assert info["accuracy"] == {"horse_snr0dB": out["_accuracy"]} and 0 <= out["_accuracy"] <= 1
    assert info["noise"]["file"].endswith("149024__foxen10__horse_whinny.wav")
    df = pd.read_csv(folder / "csvs" / "topK_30_pos.csv")
    assert len(df) == 4 and np.isfinite(df[["FF", "AD", "recon_snr_db"]].to_numpy()).all()


def test_stft_gradcam_on_real_clips(tmp_path):
    from audiointerp.runner import RunConfig, run

    ckpt = need("stft")
    run(RunConfig(checkpoint=str(ckpt), methods=["gradcam"], limit=2, results=str(tmp_path), root=str(ROOT)),
        progress=False)
    a = np.load(next((tmp_path / "compact_stft" / "gradcam_clean" / "attributions").glob("*.npy")))
    assert a.shape == (1, 257, 313)


@pytest.mark.parametrize("kind", ["mel", "stft"])
def test_committed_weights_reach_their_floor_on_fold_5(kind):
    from audiointerp.data import ESC50, fold_features
    from audiointerp.fit import accuracy
    from audiointerp.models import load_classifier

    model, ex, ckpt = load_classifier(need(kind))
    ds = ESC50(ROOT, (5,), ex.cfg.sample_rate, ex.cfg.duration)
    acc = accuracy(model, fold_features(ds, ex.cfg), torch.from_numpy(ds.labels.copy()))
    assert acc == pytest.approx(ckpt["metrics"]["test_acc"], abs=1e-6)  # the card's figure is reproducible
    assert f"accuracy | {acc:.4f} [" in WEIGHTS[kind].with_suffix(".md").read_text()  # and the card says it
    assert round(acc * len(ds)) >= round(FLOORS[kind] * len(ds))  # in clips: acc is a float32 mean


def committed_interpreters(classifier):
    """``{method: interpreter file}`` of the committed interpreters of ``classifier`` (a default checkpoint)."""
    from audiointerp.learned.checkpoints import default_interpreter_path

    return {k: default_interpreter_path(classifier, k) for k in LEARNED_KINDS
            if default_interpreter_path(classifier, k).is_file()}


def test_every_committed_interpreter_matches_its_classifier():
    from audiointerp.learned import load_interpreter, read_interpreter
    from audiointerp.learned.checkpoints import lmac_variant
    from audiointerp.provenance import file_sha256

    pairs = [(m, path, w) for w in WEIGHTS.values() for m, path in committed_interpreters(w).items()]
    assert {(m, w) for m, _, w in pairs} >= {(m, w) for m in ("l2i", "piq", "lmac") for w in WEIGHTS.values()}
    for method, path, classifier in pairs:
        ck = read_interpreter(path)
        assert ck["classifier"]["sha256"] == file_sha256(classifier), f"{path.name}: retrain it for {classifier.name}"
        kind = "lmac" if method == "lmac_ft" else method
        load_interpreter(path, classifier, kind=kind)  # loads, weights fit
        if kind == "lmac":
            assert lmac_variant(ck) == method
        if kind == "l2i":
            nmf = REPO / "weights" / ck["nmf"]["path"]
            assert file_sha256(nmf) == ck["nmf"]["sha256"]
        assert ck["training"]["best_epoch"] in [h["epoch"] for h in ck["training"]["history"]]
        assert path.with_suffix(".md").is_file()


@pytest.mark.parametrize("kind", ["mel", "stft"])
def test_every_method_runs_on_the_committed_defaults(tmp_path, kind):
    """A smoke run of every built-in method, with its committed interpreter, on two real clips."""
    from audiointerp.runner import RunConfig, run

    ckpt = need(kind)
    methods = ["saliency", "gradcam", "shap", "lime", *committed_interpreters(ckpt)]
    run(RunConfig(checkpoint=str(ckpt), methods=methods, limit=2, shap_nsamples=4, lime_nsamples=20,
                  masks=["topK_30_pos"], results=str(tmp_path), root=str(ROOT)), progress=False)
    folders = sorted(p.name for p in (tmp_path / ckpt.stem).iterdir())
    assert len(folders) == len(methods)
    for folder in folders:
        for csv in (tmp_path / ckpt.stem / folder / "csvs").glob("*.csv"):
            df = pd.read_csv(csv)
            assert sorted(df["sample"]) == [0, 0, 1, 1], (folder, csv.name)
            assert np.isfinite(df[["FF", "AD", "FidIn"]].to_numpy()).all(), (folder, csv.name)
