"""The L2I NMF dictionary: recovery of known templates, fixed-W activations, save/load, errors."""

import numpy as np
import pytest
import torch

from audiointerp.errors import CheckpointError, ConfigError
from audiointerp.nmf import NMFDictionary, learn_dictionary
from audiointerp.processing import FeatureConfig, log1p_stft

CFG = FeatureConfig(kind="stft", duration=1.0)  # 16 kHz, n_fft 512: 257 bins
F = CFG.n_fft // 2 + 1


def templates(k=4):
    f = np.arange(F)
    centres = np.linspace(30, 220, k)
    return np.stack([np.exp(-0.5 * ((f - c) / 6.0) ** 2) for c in centres], 1)  # [F, k], peak 1


def mixture(n=1500, seed=0, k=4):
    rng = np.random.default_rng(seed)
    H = rng.gamma(0.5, 1.0, size=(k, n)) * (rng.random((k, n)) < 0.5)  # sparse, non-negative
    return templates(k), H


def test_nmf_recovers_known_templates():
    W_true, H = mixture()
    X = torch.from_numpy((W_true @ H).T)  # frames as rows
    d = learn_dictionary(X, CFG, n_components=4, seed=0)
    assert d.W.shape == (F, 4) and (d.W >= 0).all() and d.info["relative_error"] < 0.02
    learned = d.W.numpy() / np.linalg.norm(d.W.numpy(), axis=0)
    truth = W_true / np.linalg.norm(W_true, axis=0)
    cos = truth.T @ learned  # [true, learned]
    assert (cos.max(1) > 0.98).all(), cos.round(3)  # every true template found
    assert sorted(cos.argmax(1).tolist()) == [0, 1, 2, 3]  # each by a different atom


def test_activations_with_fixed_dictionary_reconstruct():
    W_true, H = mixture(n=300, seed=1)
    d = NMFDictionary(torch.from_numpy(W_true.astype(np.float32)), CFG, {})
    L = torch.from_numpy((W_true @ H).astype(np.float32))[None]  # [1, F, T]
    A = d.activations(L)
    assert A.shape == (1, 4, 300) and (A >= 0).all()
    assert torch.allclose(d.W @ A[0], L[0], atol=1e-3)
    assert np.allclose(A[0].numpy(), H, atol=1e-3)  # the unique non-negative solution
    assert d.activations(L[0]).shape == (4, 300)


def test_save_load_and_configuration_checks(tmp_path):
    W_true, H = mixture(n=400)
    d = learn_dictionary(torch.from_numpy((W_true @ H).T), CFG, n_components=4)
    path = d.save(tmp_path / "nmf.pt")
    e = NMFDictionary.load(path)
    assert torch.equal(e.W, d.W) and e.cfg == CFG and e.info == d.info
    e.check(FeatureConfig(kind="mel", duration=5.0, hop_length=CFG.hop_length))  # same STFT, other features: fine
    with pytest.raises(ConfigError, match="44100"):
        e.check(FeatureConfig(kind="stft", sample_rate=44100))
    with pytest.raises(CheckpointError, match="missing.pt"):
        NMFDictionary.load(tmp_path / "missing.pt")
    torch.save({"W": d.W}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an audiointerp NMF dictionary"):
        NMFDictionary.load(tmp_path / "other.pt")


def test_bad_frames_are_clear_errors():
    with pytest.raises(ConfigError, match="257"):
        learn_dictionary(torch.rand(50, 100), CFG, n_components=4)
    with pytest.raises(ConfigError, match="non-negative"):
        learn_dictionary(-torch.rand(50, F), CFG, n_components=4)
    with pytest.raises(ConfigError, match="n_components"):
        learn_dictionary(torch.rand(50, F), CFG, n_components=0)


def test_log1p_stft_shapes():
    wav = torch.randn(2, CFG.n_samples) * 0.1
    L = log1p_stft(wav, CFG)[0]
    assert L.shape == (2, F, CFG.n_frames) and (L >= 0).all()
    assert torch.allclose(log1p_stft(wav[0], CFG)[0], L[:1])


@pytest.mark.slow
def test_train_nmf_notebook_runs_headless(tmp_path, synthetic_root, toy_checkpoint, monkeypatch):
    papermill = pytest.importorskip("papermill")
    from conftest import REPO

    monkeypatch.setenv("ESC50_ROOT", str(synthetic_root))
    out = tmp_path / "nmf_toy.pt"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "train_nmf.ipynb"), str(tmp_path / "train_nmf.out.ipynb"),
        parameters={"checkpoint": str(toy_checkpoint), "out": str(out), "n_components": 4, "n_clips": 6,
                    "n_frames": 200, "max_iter": 50},
        cwd=str(REPO / "notebooks"), progress_bar=False, kernel_name="python3")
    d = NMFDictionary.load(out)
    assert d.W.shape == (257, 4) and d.cfg.duration == 1.0  # the toy classifier's own STFT
    assert "relative reconstruction error" in out.with_suffix(".md").read_text()


def test_committed_dictionaries_match_their_classifiers():
    from conftest import REPO

    from audiointerp.models import load_classifier

    for name in ("compact_mel", "compact_stft"):
        path = REPO / "weights" / f"nmf_{name}.pt"
        if not path.is_file():
            pytest.skip(f"{path} not trained yet")
        d = NMFDictionary.load(path)
        _, ex, _ = load_classifier(REPO / "weights" / f"{name}.pt")
        d.check(ex.cfg)
        assert d.W.shape == (ex.cfg.n_fft // 2 + 1, 100) and (d.W >= 0).all()
        assert torch.allclose(d.W.amax(0), torch.ones(100))
