"""Accuracy report: exact values on hand-made predictions, bootstrap CI, confusion matrix, card."""

import numpy as np
import pytest
import scipy.stats

from audiointerp.errors import ConfigError, DatasetError
from audiointerp.evaluate import accuracy_report, evaluate_checkpoint, plot_confusion, report_markdown


def test_report_exact_values():
    labels = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    r = accuracy_report(labels, pred, ["a", "b", "c"], filenames=[f"{i}.wav" for i in range(10)])
    assert r.accuracy == pytest.approx(0.8) and r.n == 10
    np.testing.assert_array_equal(r.confusion, [[3, 1, 0], [0, 1, 1], [0, 0, 4]])
    assert r.per_class["accuracy"].tolist() == pytest.approx([0.75, 0.5, 1.0])
    assert r.per_class["n"].tolist() == [4, 2, 4]
    assert r.confusion.sum() == 10 and np.trace(r.confusion) == 8
    err = r.errors()
    assert err.to_dict("records") == [{"filename": "3.wav", "true": "a", "predicted": "b"},
                                      {"filename": "5.wav", "true": "b", "predicted": "c"}]
    assert list(r.summary()["weakest_classes"]) == ["b", "a", "c"]


def test_bootstrap_ci_matches_scipy():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 200)
    pred = np.where(rng.random(200) < 0.7, labels, (labels + 1) % 5)
    r = accuracy_report(labels, pred, list("abcde"), n_resamples=2000, seed=7)
    correct = (labels == pred).astype(float)
    ref = scipy.stats.bootstrap((correct,), np.mean, n_resamples=2000, method="percentile", rng=7,
                                vectorized=True).confidence_interval
    assert r.ci_low == pytest.approx(ref.low) and r.ci_high == pytest.approx(ref.high)
    assert r.ci_low < r.accuracy < r.ci_high
    # same seed, same interval; a perfect classifier has a zero-width one
    assert accuracy_report(labels, pred, list("abcde"), n_resamples=2000, seed=7).ci_low == r.ci_low
    p = accuracy_report(labels, labels, list("abcde"))
    assert p.accuracy == p.ci_low == p.ci_high == 1.0


def test_class_without_clips_is_nan_not_zero():
    r = accuracy_report([0, 0], [0, 1], ["a", "b", "c"])
    assert np.isnan(r.per_class["accuracy"][2]) and r.per_class["n"][2] == 0


@pytest.mark.parametrize("labels, pred, match", [([], [], "non-empty"), ([0, 1], [0], "same length"),
                                                 ([0, 3], [0, 1], "label 3 is outside"),
                                                 ([0, 1], [0, -1], "prediction -1 is outside")])
def test_bad_inputs_name_the_value(labels, pred, match):
    with pytest.raises(ConfigError, match=match):
        accuracy_report(labels, pred, ["a", "b", "c"])


def test_evaluate_checkpoint_and_card(toy_checkpoint, esc50_env, tmp_path):
    from audiointerp.data import ESC50
    from audiointerp.evaluate import model_card
    from audiointerp.models import load_classifier

    r = evaluate_checkpoint(toy_checkpoint, folds=(5, 4))
    ds = ESC50(None, (4, 5))
    assert r.n == len(ds) == 12 and r.confusion.sum() == 12
    np.testing.assert_array_equal(np.sort(r.labels), np.sort(ds.labels))
    assert r.filenames == ds.filenames and "folds 5,4" in r.source
    with pytest.raises(DatasetError, match="ESC-50 folds are 1-5, got \\[6\\]"):
        evaluate_checkpoint(toy_checkpoint, folds=(6,))
    fig = plot_confusion(r, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 0 and fig.axes
    _, _, ckpt = load_classifier(toy_checkpoint)
    cv = {"n_folds": 5, "mean": 0.5, "std": 0.1,
          "folds": [{"test_fold": k, "val_fold": k - 1 or 5, "test_acc": 0.5, "best_epoch": 1} for k in range(1, 6)]}
    card = model_card(ckpt, ms_per_clip=1.0, report=r, figure="cm.png", cv=cv)
    assert f"[{r.ci_low:.4f}, {r.ci_high:.4f}]" in card
    assert "![confusion matrix](cm.png)" in card and "| dog |" in card
    assert "5-fold cross-validation accuracy | 0.5000 +- 0.1000" in card
    table = [ln for ln in report_markdown(r).splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 3  # header, rule, one row per class


def test_accuracy_script_writes_report_and_card(toy_checkpoint, esc50_env, tmp_path, capsys):
    import importlib.util
    import shutil

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("accuracy_script", REPO / "scripts" / "accuracy.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint not found" in err and "missing.pt" in err
    ckpt = shutil.copy(toy_checkpoint, tmp_path / "toy.pt")
    assert script.main(["--checkpoint", str(ckpt), "--card", "--n-resamples", "200"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("accuracy: ")
    card = (tmp_path / "toy.md").read_text()
    assert "bootstrap CI" in card and "![confusion matrix](toy_confusion.png)" in card
    assert (tmp_path / "toy_confusion.png").is_file() and (tmp_path / "toy_per_class.csv").is_file()
