"""Training recipe: augmentations keep shapes and label mass; seeded runs reproduce; resume continues."""

import pytest
import torch
import torch.nn.functional as F

from audiointerp.fit import TrainConfig, augment, mixup, train
from audiointerp.models import clone_state, load_classifier


def test_mixup_targets_sum_to_one_and_shapes_kept():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 16, 20)
    y = F.one_hot(torch.arange(8) % 3, 3).float() * 0.9 + 0.1 / 3
    xm, ym = mixup(x, y, 0.4, g)
    assert xm.shape == x.shape and ym.shape == y.shape
    torch.testing.assert_close(ym.sum(1), torch.ones(8))
    assert (ym.max(1).values >= 0.5 * 0.9).all()  # the first clip dominates
    assert mixup(x, y, 0.0, g)[0] is x


def test_augment_keeps_shape_and_floor():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 64, 101) * 100 - 90
    cfg = TrainConfig()
    out = augment(x, cfg, g)
    assert out.shape == x.shape and out.min() >= -100
    assert (out == -100).any()  # SpecAugment masks fill with the -100 dB floor
    off = augment(x, TrainConfig(freq_mask=0, time_mask=0, max_shift=0, gain_db=0), g)
    assert torch.equal(off, x)


def test_clone_state_is_a_copy():
    from audiointerp.models import CompactCNN

    m = CompactCNN(n_freq=8, n_classes=2, channels=(2, 2, 2, 2))
    snap = clone_state(m)
    with torch.no_grad():
        m.fc.weight.add_(1.0)
    assert not torch.equal(snap["fc.weight"], m.fc.weight)


def _cfg(**kw):
    base = dict(features="mel", epochs=3, batch_size=4, arch_args={"channels": (2, 4, 4, 4)}, seed=3, threads=0)
    base.update(kw)
    return TrainConfig(**base)


def _crash_after_two_epochs(monkeypatch):
    """Make the third validation (epoch 3) raise KeyboardInterrupt, as a killed run; returns the real
    ``fit.accuracy`` to put back."""
    import audiointerp.fit as fit

    calls = {"n": 0}
    real = fit.accuracy

    def crash(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(fit, "accuracy", crash)
    return real


def test_short_seeded_training_is_reproducible(tmp_path, esc50_env, monkeypatch):
    monkeypatch.setattr("audiointerp.fit.FeatureConfig.default", classmethod(
        lambda cls, kind: cls(kind=kind, duration=1.0)))
    m1 = train(_cfg(), tmp_path / "a.pt", progress=False)
    m2 = train(_cfg(), tmp_path / "b.pt", progress=False)
    assert [h["loss"] for h in m1["history"]] == [h["loss"] for h in m2["history"]]
    a, _, ca = load_classifier(tmp_path / "a.pt")
    b, _, _ = load_classifier(tmp_path / "b.pt")
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k])
    # the kept weights are those of the best validation epoch, recorded in the checkpoint
    best = max(m1["history"], key=lambda h: h["val_acc"])
    assert ca["metrics"]["best_epoch"] == best["epoch"]
    assert ca["metrics"]["val_acc"] == best["val_acc"]
    assert ca["training"]["seed"] == 3 and ca["features"]["duration"] == 1.0


def test_resume_continues_from_the_same_step(tmp_path, esc50_env, monkeypatch):
    monkeypatch.setattr("audiointerp.fit.FeatureConfig.default", classmethod(
        lambda cls, kind: cls(kind=kind, duration=1.0)))
    full = train(_cfg(), tmp_path / "full.pt", progress=False)

    import audiointerp.fit as fit

    real = _crash_after_two_epochs(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(), tmp_path / "resumed.pt", progress=False)
    state = torch.load(tmp_path / "resumed.pt.state.pt", weights_only=False)
    assert state["epoch"] == 2
    monkeypatch.setattr(fit, "accuracy", real)
    resumed = train(_cfg(), tmp_path / "resumed.pt", progress=False)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in full["history"]])
    a, _, _ = load_classifier(tmp_path / "full.pt")
    b, _, _ = load_classifier(tmp_path / "resumed.pt")
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k])


def test_warm_start_from_a_checkpoint(tmp_path, esc50_env, monkeypatch):
    from audiointerp.errors import CheckpointError

    monkeypatch.setattr("audiointerp.fit.FeatureConfig.default", classmethod(
        lambda cls, kind: cls(kind=kind, duration=1.0)))
    first = train(_cfg(epochs=1), tmp_path / "first.pt", progress=False)
    second = train(_cfg(epochs=1, init_from=str(tmp_path / "first.pt")), tmp_path / "second.pt", progress=False)
    fresh = train(_cfg(epochs=1), tmp_path / "fresh.pt", progress=False)
    assert second["history"][0]["loss"] != fresh["history"][0]["loss"]  # did not start from scratch
    assert first["history"][0]["loss"] == fresh["history"][0]["loss"]
    with pytest.raises(CheckpointError, match="init_from"):
        train(_cfg(epochs=1, features="stft", init_from=str(tmp_path / "first.pt")), tmp_path / "x.pt", progress=False)


def test_cv_split_rotates_test_and_validation_folds():
    from audiointerp.errors import ConfigError
    from audiointerp.fit import cv_split

    assert cv_split(5) == ((1, 2, 3), (4,), (5,))  # the default split
    assert cv_split(1) == ((2, 3, 4), (5,), (1,))
    splits = [cv_split(k) for k in range(1, 6)]
    assert sorted(s[2][0] for s in splits) == [1, 2, 3, 4, 5]
    assert sorted(s[1][0] for s in splits) == [1, 2, 3, 4, 5]
    for tr, va, te in splits:
        assert sorted(tr + va + te) == [1, 2, 3, 4, 5]
    with pytest.raises(ConfigError, match="test_fold 6"):
        cv_split(6)


def test_cross_validation_trains_each_fold_once_and_resumes(tmp_path, esc50_env, monkeypatch):
    import json

    import numpy as np

    import audiointerp.fit as fit

    monkeypatch.setattr("audiointerp.fit.FeatureConfig.default", classmethod(
        lambda cls, kind: cls(kind=kind, duration=1.0)))
    seen = []
    real_train = fit.train

    def spy(cfg, out, **kw):
        seen.append((cfg.train_folds, cfg.val_folds, cfg.test_folds))
        return real_train(cfg, out, **kw)

    monkeypatch.setattr(fit, "train", spy)
    cv = fit.cross_validate(_cfg(epochs=1), tmp_path / "cv", progress=False)
    assert [s[2] for s in seen] == [(1,), (2,), (3,), (4,), (5,)]
    accs = [r["test_acc"] for r in cv["folds"]]
    assert cv["mean"] == pytest.approx(np.mean(accs)) and cv["std"] == pytest.approx(np.std(accs, ddof=1))
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["mean"] == pytest.approx(cv["mean"])
    # the fold-5 run is exactly the default split's run
    _, _, c5 = load_classifier(tmp_path / "cv" / "fold5.pt")
    assert c5["training"]["train_folds"] == (1, 2, 3) and c5["metrics"]["test_acc"] == accs[4]
    # a finished cross-validation is read back, not retrained; another recipe retrains
    seen.clear()
    again = fit.cross_validate(_cfg(epochs=1), tmp_path / "cv", progress=False)
    assert seen == [] and again["folds"] == cv["folds"]
    fit.cross_validate(_cfg(epochs=1, seed=4), tmp_path / "cv", folds=(3, 4, 5), progress=False)
    assert [s[2] for s in seen] == [(3,), (4,), (5,)] and seen[0][1] == (5,)


def _short_features(monkeypatch):
    monkeypatch.setattr("audiointerp.fit.FeatureConfig.default", classmethod(
        lambda cls, kind: cls(kind=kind, duration=1.0)))


def test_teacher_targets_average_the_tempered_probabilities_across_feature_kinds(tmp_path, esc50_env, monkeypatch):
    from audiointerp.data import ESC50, fold_features
    from audiointerp.errors import ConfigError
    from audiointerp.fit import teacher_targets
    from audiointerp.models import predict_logits
    from audiointerp.processing import FeatureConfig

    _short_features(monkeypatch)
    train(_cfg(epochs=1), tmp_path / "mel.pt", progress=False)
    train(_cfg(epochs=1, features="stft"), tmp_path / "stft.pt", progress=False)
    ds = ESC50(esc50_env, (1,), 16000, 1.0)
    soft = teacher_targets([tmp_path / "mel.pt", tmp_path / "stft.pt"], ds, temperature=3.0)
    assert soft.shape == (len(ds), len(ds.class_names))
    torch.testing.assert_close(soft.sum(1), torch.ones(len(ds)))
    expected = []
    for name in ("mel.pt", "stft.pt"):  # each teacher on its own features
        model, _, ckpt = load_classifier(tmp_path / name)
        with torch.no_grad():
            logits = predict_logits(model, fold_features(ds, FeatureConfig.from_dict(ckpt["features"])))
        expected.append(torch.softmax(logits / 3.0, 1))
    torch.testing.assert_close(soft, (expected[0] + expected[1]) / 2)
    with pytest.raises(ConfigError, match="kd_temperature"):
        teacher_targets([tmp_path / "mel.pt"], ds, temperature=0.0)
    with pytest.raises(ConfigError, match="teacher"):
        teacher_targets([], ds)


def test_distillation_changes_the_targets_and_records_its_teachers(tmp_path, esc50_env, monkeypatch):
    from audiointerp.errors import ConfigError
    from audiointerp.provenance import file_sha256

    _short_features(monkeypatch)
    train(_cfg(epochs=1, features="stft"), tmp_path / "teacher.pt", progress=False)
    plain = train(_cfg(epochs=1), tmp_path / "plain.pt", progress=False)
    kd = train(_cfg(epochs=1, teachers=(str(tmp_path / "teacher.pt"),), kd_weight=0.7), tmp_path / "kd.pt",
               progress=False)
    assert kd["history"][0]["loss"] != plain["history"][0]["loss"]
    assert kd["teachers"] == {str(tmp_path / "teacher.pt"): file_sha256(tmp_path / "teacher.pt")}
    assert load_classifier(tmp_path / "kd.pt")[2]["training"]["kd_weight"] == 0.7
    with pytest.raises(ConfigError, match="needs teachers"):
        train(_cfg(epochs=1, kd_weight=0.5), tmp_path / "x.pt", progress=False)
    with pytest.raises(ConfigError, match="kd_weight"):
        train(_cfg(epochs=1, teachers=("t.pt",), kd_weight=1.5), tmp_path / "x.pt", progress=False)
    with pytest.raises(ConfigError, match="ema_decay"):
        train(_cfg(epochs=1, ema_decay=1.0), tmp_path / "x.pt", progress=False)


def test_weight_average_is_what_is_kept_and_resumes(tmp_path, esc50_env, monkeypatch):
    import audiointerp.fit as fit

    _short_features(monkeypatch)
    full = train(_cfg(ema_decay=0.5), tmp_path / "full.pt", progress=False)
    plain = train(_cfg(), tmp_path / "plain.pt", progress=False)
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in plain["history"]]  # same raw training
    train(_cfg(epochs=1, ema_decay=0.5), tmp_path / "one.pt", progress=False)  # one epoch: it is the best
    state = torch.load(tmp_path / "one.pt.state.pt", weights_only=False)
    kept, _, _ = load_classifier(tmp_path / "one.pt")
    for k, v in kept.state_dict().items():  # the kept weights are the average's, not the raw model's
        torch.testing.assert_close(v, state["ema"]["module." + k])
    assert not torch.equal(kept.state_dict()["fc.weight"], state["model"]["fc.weight"])
    real = _crash_after_two_epochs(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(ema_decay=0.5), tmp_path / "resumed.pt", progress=False)
    monkeypatch.setattr(fit, "accuracy", real)
    resumed = train(_cfg(ema_decay=0.5), tmp_path / "resumed.pt", progress=False)
    assert [h["val_acc"] for h in resumed["history"]] == [h["val_acc"] for h in full["history"]]
    a, _, _ = load_classifier(tmp_path / "full.pt")
    b, _, _ = load_classifier(tmp_path / "resumed.pt")
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k])
