"""One-clip exploration (audiointerp.explore) and the illustration notebook."""

import pytest
import soundfile as sf
import torch
from conftest import REPO

from audiointerp.errors import ConfigError, DatasetError
from audiointerp.explore import explain_clip, fold_index, load_example, save_explanation, scores_table
from audiointerp.masks import resolve_mask_name
from audiointerp.metrics import METRIC_NAMES
from audiointerp.models import load_classifier
from audiointerp.noise import NoiseSpec
from audiointerp.processing import reconstruction_snr_db

CLIP = "5-100500-A-0.wav"  # a synthetic clip (fold 5, class 0), stored as FLAC at 22.05 kHz


@pytest.fixture(scope="module")
def toy(toy_checkpoint, synthetic_root):
    model, extractor, ckpt = load_classifier(toy_checkpoint)
    wav, label = load_example(CLIP, synthetic_root, extractor.cfg.sample_rate, extractor.cfg.duration)
    return model, extractor, ckpt, wav, label


def test_load_example(toy, synthetic_root):
    *_, wav, label = toy
    assert wav.shape == (16000,) and wav.dtype == torch.float32 and label == 0
    assert fold_index(CLIP, synthetic_root) == 0 and fold_index("5-100521-A-2.flac", synthetic_root) == 5
    with pytest.raises(DatasetError, match="5-999999-A-0"):
        load_example("5-999999-A-0.wav", synthetic_root, 16000, 1.0)


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_explain_clip_shapes(toy, method):
    model, extractor, _, wav, _ = toy
    e = explain_clip(model, extractor, wav, method, "topK", k=0.25, noise=NoiseSpec("white_gen", snr_db=10))
    cfg = extractor.cfg
    shape = (1, cfg.n_freq, cfg.n_frames)
    for t in (e.features, e.attribution, e.mask, e.x_in, e.x_out):
        assert t.shape == shape and t.dtype == torch.float32
    for t in (e.waveform, e.audio_in, e.audio_out):
        assert t.shape == (cfg.n_samples,) and t.dtype == torch.float32
    assert e.probs.shape == (3,) and e.pred == int(e.probs.argmax()) == e.target
    assert e.mask_name == "topK_25" and e.condition == "white_gen_snr10dB" and e.sample_rate == 16000
    assert set(e.scores) == {"spectrogram", "audio"} and all(list(s) == METRIC_NAMES for s in e.scores.values())
    assert abs(e.mask.mean().item() - 0.25) < 0.02
    assert scores_table([e]).shape == (2, len(METRIC_NAMES) + 1)


def test_all_ones_mask_gives_the_clip_back(toy):
    model, extractor, _, wav, _ = toy
    e = explain_clip(model, extractor, wav, "saliency", "topK_100", k=1.0)
    assert bool((e.mask == 1).all()) and torch.equal(e.x_in, e.features)
    assert float(reconstruction_snr_db(e.waveform, e.audio_in)) > 60
    assert e.recon_snr_db > 60
    spec, audio = e.scores["spectrogram"], e.scores["audio"]
    for m in METRIC_NAMES:
        assert audio[m] == pytest.approx(spec[m], abs=1e-3), m


def test_written_audio_has_the_model_rate(toy, tmp_path):
    model, extractor, ckpt, wav, _ = toy
    e = explain_clip(model, extractor, wav, "gradcam", "pos_thresh_50")
    paths = save_explanation(e, tmp_path, "x", ckpt["class_names"])
    for part in ("clip", "in", "out"):
        info = sf.info(str(paths[part]))
        assert info.samplerate == 16000 and info.frames == 16000 and info.channels == 1, part  # source: 22050 Hz
    assert paths["png"].stat().st_size > 1000


@pytest.mark.parametrize("mask, kw, bad", [("topK_7x", {}, "topK_7x"), ("topK", {"k": 1.5}, "1.5"),
                                           ("pos_thresh", {"tau": 0.0}, "0.0"), ("topK", {}, "needs k"),
                                           ("topK_25", {"k": 0.5}, "0.5"), ("topK_0", {}, "0")])
def test_bad_mask_is_named(toy, mask, kw, bad):
    with pytest.raises(ConfigError, match=bad):
        resolve_mask_name(mask, **kw)
    model, extractor, _, wav, _ = toy
    with pytest.raises(ConfigError, match=bad):
        explain_clip(model, extractor, wav, "saliency", mask, **kw)


def test_resolve_mask_name():
    assert resolve_mask_name("minmax") == "minmax"
    assert resolve_mask_name("topK_5_pos") == "topK_5_pos"
    assert resolve_mask_name("pos_thresh", tau=0.6) == "pos_thresh_60"
    assert resolve_mask_name("topK_30", k=0.3) == "topK_30"
    assert resolve_mask_name("topK", k=0.255) == "topK_25.5"


def test_native_mask_of_a_method_without_one_is_named(toy):
    model, extractor, _, wav, _ = toy
    with pytest.raises(ConfigError, match="native"):
        explain_clip(model, extractor, wav, "saliency", "native")


def test_bad_inputs_are_named(toy):
    model, extractor, _, wav, _ = toy
    with pytest.raises(ConfigError, match="8000"):
        explain_clip(model, extractor, wav[:8000], "saliency")
    with pytest.raises(ConfigError, match="gradcamm"):
        explain_clip(model, extractor, wav, "gradcamm")
    with pytest.raises(ConfigError, match="lawnmower"):
        explain_clip(model, extractor, wav, "saliency", noise=NoiseSpec("lawnmower"))


@pytest.mark.slow
def test_illustration_notebook_runs_headless(tmp_path, synthetic_root, toy_checkpoint, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("ESC50_ROOT", str(synthetic_root))
    out = tmp_path / "illustration"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "illustration.ipynb"), str(tmp_path / "illustration.out.ipynb"),
        parameters={"checkpoint": str(toy_checkpoint), "clip": CLIP, "interactive": False, "shap_nsamples": 2,
                    "out": str(out)},
        cwd=str(REPO / "notebooks"), progress_bar=False, kernel_name="python3")
    for method in ("saliency", "gradcam", "shap"):
        stem = f"5-100500-A-0_{method}_topK_30_clean"
        assert (out / f"{stem}.png").is_file(), stem
        for part in ("clip", "in", "out"):
            assert sf.info(str(out / f"{stem}_{part}.wav")).samplerate == 16000
    assert (out / "5-100500-A-0_topK_30_clean_scores.csv").is_file()
    text = (tmp_path / "illustration.out.ipynb").read_text()
    assert "image/png" in text and "<audio" in text
