"""Accuracy of a classifier on ESC-50 folds, as a model card reports it.

* top-1 accuracy with a seeded percentile-bootstrap 95% confidence interval over clips
  (Efron & Tibshirani 1993, ch. 13; :func:`audiointerp.tables.bootstrap_ci`),
* per-class accuracy (the recall of each class, :func:`sklearn.metrics.recall_score`),
* the confusion matrix (:func:`sklearn.metrics.confusion_matrix`; rows: true class, columns:
  predicted class) and its figure.

:func:`evaluate_checkpoint` is what ``scripts/accuracy.py`` and ``python -m audiointerp
evaluate`` run; :func:`accuracy_report` works on any labels and predictions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .data import ESC50, fold_features
from .errors import ConfigError
from .models import build_model, fuse_for_inference, load_classifier, predict_logits
from .processing import FeatureConfig
from .stats import bootstrap_ci


@dataclass
class AccuracyReport:
    """Accuracy of one classifier on a set of clips.

    Attributes:
        accuracy: top-1 accuracy in [0, 1].
        ci_low, ci_high: bounds of the percentile-bootstrap CI of the accuracy (``confidence``).
        confidence: coverage of the CI, e.g. 0.95.
        n: number of clips.
        class_names: ``[n_classes]`` names, in label order.
        per_class: one row per class (``class``, ``n``, ``correct``, ``accuracy``), label order.
        confusion: int64 ``[n_classes, n_classes]``, rows true class, columns predicted class.
        labels, predicted: int64 ``[n]`` true and predicted labels.
        filenames: ``[n]`` clip file names (may be empty).
        source: what was evaluated (checkpoint path and folds), for the printout.
        ms_per_clip: measured forward cost in ms per clip (:func:`forward_ms_per_clip`), or None.
    """

    accuracy: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int
    class_names: list
    per_class: pd.DataFrame
    confusion: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    filenames: list = field(default_factory=list)
    source: str = ""
    ms_per_clip: float | None = None

    def summary(self) -> dict:
        """JSON-ready headline figures: accuracy, CI, n and the five weakest classes."""
        worst = self.per_class.sort_values(["accuracy", "class"]).head(5)
        return {"source": self.source, "n": self.n, "accuracy": round(self.accuracy, 4),
                "ci": [round(self.ci_low, 4), round(self.ci_high, 4)], "confidence": self.confidence,
                "weakest_classes": {r["class"]: round(float(r["accuracy"]), 3) for _, r in worst.iterrows()}}

    def errors(self) -> pd.DataFrame:
        """The misclassified clips: ``filename``, ``true`` and ``predicted`` class names."""
        wrong = np.flatnonzero(self.labels != self.predicted)
        names = np.asarray(self.class_names, dtype=object)
        return pd.DataFrame({"filename": [self.filenames[i] for i in wrong] if self.filenames else [""] * len(wrong),
                             "true": names[self.labels[wrong]], "predicted": names[self.predicted[wrong]]})


def accuracy_report(labels, predicted, class_names, n_resamples: int = 1000, seed: int = 0,
                    confidence: float = 0.95, filenames=None, source: str = "") -> AccuracyReport:
    """Accuracy, bootstrap CI, per-class accuracy and confusion matrix of predictions.

    Args:
        labels, predicted: int ``[n]`` true and predicted class indices in ``[0, n_classes)``.
        class_names: ``[n_classes]`` names.
        n_resamples, seed, confidence: the percentile bootstrap over clips
            (:func:`audiointerp.tables.bootstrap_ci`, SciPy's draws).
        filenames: optional ``[n]`` clip names, kept for :meth:`AccuracyReport.errors`.

    Returns:
        :class:`AccuracyReport`.

    Raises:
        ConfigError: empty or mismatched inputs, or a label outside ``[0, n_classes)`` (quoted).
    """
    from sklearn.metrics import confusion_matrix


    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    predicted = np.asarray(predicted, dtype=np.int64).reshape(-1)
    n_classes = len(class_names)
    if len(labels) == 0 or len(labels) != len(predicted):
        raise ConfigError(f"labels and predictions must be non-empty and the same length, got {len(labels)} "
                          f"and {len(predicted)}")
    for name, v in (("label", labels), ("prediction", predicted)):
        bad = v[(v < 0) | (v >= n_classes)]
        if len(bad):
            raise ConfigError(f"{name} {int(bad[0])} is outside [0, {n_classes}) for {n_classes} class names")
    correct = (labels == predicted).astype(float)
    acc, lo, hi = bootstrap_ci(correct, n_resamples=n_resamples, seed=seed, confidence=confidence)
    cm = confusion_matrix(labels, predicted, labels=np.arange(n_classes))
    support = cm.sum(1)
    hits = np.diag(cm)
    per_acc = np.divide(hits, support, out=np.full(n_classes, np.nan), where=support > 0)
    per_class = pd.DataFrame({"class": list(class_names), "n": support, "correct": hits, "accuracy": per_acc})
    return AccuracyReport(accuracy=float(acc), ci_low=float(lo), ci_high=float(hi), confidence=confidence,
                          n=len(labels), class_names=list(class_names), per_class=per_class,
                          confusion=cm.astype(np.int64), labels=labels, predicted=predicted,
                          filenames=list(filenames) if filenames is not None else [], source=source)


def evaluate_checkpoint(checkpoint: str | os.PathLike, folds=(5,), root=None, n_resamples: int = 1000,
                        seed: int = 0, confidence: float = 0.95, measure_cost: bool = False,
                        device=None, metadata: str | None = None) -> AccuracyReport:
    """Accuracy report of a classifier checkpoint on ESC-50 folds (or another dataset's).

    Features are those the checkpoint declares, computed once and cached
    (:func:`audiointerp.data.fold_features`); logits come from batched eval-mode forward passes.

    Args:
        checkpoint: classifier checkpoint (``audiointerp-classifier/1``).
        folds: ESC-50 folds to evaluate on (default: the test fold 5).
        root: ESC-50 root (None: ``ESC50_ROOT``).
        n_resamples, seed, confidence: the bootstrap of the CI.
        measure_cost: also time the forward pass on these features (``ms_per_clip``).
        device: where the forward passes run (:func:`audiointerp.devices.resolve_device`; None:
            the CPU).
        metadata: the dataset's csv under ``meta/`` (None: ``esc50.csv``).

    Raises:
        CheckpointError: missing or unreadable checkpoint.
        DatasetError: bad dataset root; a fold outside the dataset's (ESC-50: 1-5) or without clips.
        ConfigError: a device that is not present.
    """
    folds = tuple(int(f) for f in folds)
    if not folds:
        raise ConfigError("folds must name at least one fold")
    model, extractor, ckpt = load_classifier(checkpoint, device=device)
    ds = ESC50(root, folds, extractor.cfg.sample_rate, extractor.cfg.duration, metadata=metadata)
    names = ckpt.get("class_names") or ds.class_names
    feats = fold_features(ds, extractor.cfg)
    report = accuracy_report(ds.labels, predict_logits(model, feats).argmax(1).cpu().numpy(), names,
                             n_resamples=n_resamples, seed=seed, confidence=confidence, filenames=ds.filenames,
                             source=f"{checkpoint}, fold{'s' if len(folds) > 1 else ''} "
                                    f"{','.join(map(str, folds))}")
    if measure_cost:
        report.ms_per_clip = forward_ms_per_clip(model, feats)
    return report


def plot_confusion(report: AccuracyReport, path: str | os.PathLike | None = None, normalize: bool = True):
    """Heat map of the confusion matrix (seaborn), rows true class, columns predicted class.

    Args:
        report: :class:`AccuracyReport`.
        path: write the figure there (png/pdf by suffix) when given.
        normalize: show each row as fractions of the class's clips (else counts).

    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    cm = report.confusion.astype(float)
    if normalize:
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(report.class_names)
    size = max(5.0, 0.22 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(cm, ax=ax, cmap="Blues", vmin=0, vmax=1 if normalize else None, square=True,
                xticklabels=report.class_names, yticklabels=report.class_names,
                cbar_kws={"label": "fraction of the class's clips" if normalize else "clips", "shrink": 0.6})
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(labelsize=6 if k > 20 else 9)
    lo, hi = report.ci_low, report.ci_high
    ax.set_title(f"accuracy {report.accuracy:.3f} [{lo:.3f}, {hi:.3f}] on {report.n} clips")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def report_markdown(report: AccuracyReport, figure: str | None = None) -> str:
    """Markdown section of a model card: accuracy with CI, per-class table, confusion figure link."""
    pct = int(round(report.confidence * 100))
    lines = [f"## Accuracy ({report.source})", "",
             f"Top-1 accuracy **{report.accuracy:.4f}** on {report.n} clips, {pct}% percentile-bootstrap CI "
             f"[{report.ci_low:.4f}, {report.ci_high:.4f}].", ""]
    if figure:
        lines += [f"![confusion matrix]({figure})", ""]
    pc = report.per_class.sort_values(["accuracy", "class"])
    lines += ["Per-class accuracy, weakest first:", "", "| class | clips | accuracy |", "|---|---|---|"]
    lines += [f"| {r['class']} | {int(r['n'])} | {r['accuracy']:.2f} |" for _, r in pc.iterrows()]
    return "\n".join(lines) + "\n"


def forward_ms_per_clip(model: torch.nn.Module, feats: torch.Tensor, batch_size: int = 64, repeat: int = 3) -> float:
    """Measured forward cost of ``model`` in ms per clip: eval mode, BatchNorm folded
    (:func:`audiointerp.models.fuse_for_inference`, as the runner scores), batches of
    ``batch_size`` clips ``[batch, 1, n_freq, n_frames]`` in channels-last layout; one warm-up
    pass, then the mean of ``repeat`` timed passes, on the model's device (synchronised on a GPU).
    A figure to print, not to assert on.
    """
    import time

    fused = fuse_for_inference(model)
    dev = next(iter(fused.parameters()), feats).device
    x = feats[:batch_size].to(dev).contiguous(memory_format=torch.channels_last)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    with torch.inference_mode():
        fused(x)
        sync()
        t0 = time.perf_counter()
        for _ in range(repeat):
            fused(x)
        sync()
    return (time.perf_counter() - t0) / repeat / len(x) * 1000


def model_card(ckpt: dict, ms_per_clip: float | None = None, report=None, figure: str | None = None,
               cv: dict | None = None) -> str:
    """A Markdown model card of a checkpoint: architecture, features, accuracy, training, versions.

    Args:
        ckpt: dict from :func:`read_checkpoint` / :func:`load_classifier`.
        ms_per_clip: measured forward cost (batched, ms per clip) to report, if known.
        report: an :class:`audiointerp.evaluate.AccuracyReport` of the test fold: adds the
            bootstrap 95% CI, the per-class accuracy table and (``figure``, a path relative to
            the card) the confusion-matrix figure.
        cv: a :func:`audiointerp.fit.cross_validate` summary of the same recipe: adds the
            per-fold accuracies and their mean +- standard deviation.

    Returns:
        the card's Markdown text.
    """
    m, t, f = ckpt.get("metrics", {}), ckpt.get("training", {}), ckpt["features"]
    model = build_model(ckpt["architecture"], **ckpt["arch_args"])
    n_params = sum(p.numel() for p in model.parameters())
    cfg = FeatureConfig.from_dict(f)
    folds = (t.get("train_folds", (1, 2, 3)), t.get("val_folds", (4,)), t.get("test_folds", (5,)))

    def fmt(fs) -> str:  # (1, 2, 3) -> "1-3", (1, 4, 5) -> "1,4,5"
        fs = sorted(fs)
        contiguous = len(fs) > 2 and fs == list(range(fs[0], fs[-1] + 1))
        return f"{fs[0]}-{fs[-1]}" if contiguous else ",".join(map(str, fs))

    lines = [f"# Model card: {Path(ckpt.get('path', 'model')).name}", "",
             f"- Architecture: `{ckpt['architecture']}` {ckpt['arch_args']} ({n_params / 1e6:.2f} M parameters)",
             f"- Features: {cfg.kind}, {cfg.sample_rate} Hz, n_fft {cfg.n_fft}, hop {cfg.hop_length}"
             + (f", {cfg.n_mels} mels {cfg.f_min:g}-{cfg.f_max:g} Hz" if cfg.kind == "mel" else "")
             + f", {cfg.duration:g} s -> {cfg.n_freq} x {cfg.n_frames} (dB, floor -100 dB)",
             "- Data: ESC-50 (Piczak 2015), "
             + (f"fine-tuned from the PANNs AudioSet weights `{Path(t['pretrained']).name}` (Kong et al. 2020)"
                if t.get("pretrained") else "trained" if t.get("init_from") else "trained from scratch")
             + f" on folds {fmt(folds[0])}, model selection on fold {fmt(folds[1])}, test on fold {fmt(folds[2])}"
             + (f"; a further schedule starting from the weights of `{Path(t['init_from']).name}` (its own card "
                f"gives its lineage)" if t.get("init_from") else ""),
             f"- Code: git commit `{ckpt.get('git_commit', 'not recorded')}`",
             ""]
    test = f"fold-{fmt(folds[2])}"
    device = m.get("device") or {}
    where = "CPU" if device.get("type", "cpu") == "cpu" else f"{device.get('name')} ({device.get('device')})"
    if m:
        acc = f"{m.get('test_acc', float('nan')):.4f}"
        if report is not None:
            acc += f" [{report.ci_low:.4f}, {report.ci_high:.4f}] ({round(report.confidence * 100)}% bootstrap CI, " \
                   f"{report.n} clips)"
        lines += ["| metric | value |", "|---|---|",
                  f"| {test} (test) accuracy | {acc} |",
                  f"| fold-{fmt(folds[1])} (validation) accuracy, best epoch | {m.get('val_acc', float('nan')):.4f} |",
                  f"| best epoch (weights kept) | {m.get('best_epoch')} of {t.get('epochs')} |",
                  f"| training time{' (this schedule)' if t.get('init_from') else ''} | "
                  f"{m.get('train_seconds', 0) / 60:.1f} min ({where}) |"]
        if cv:
            lines.append(f"| {cv['n_folds']}-fold cross-validation accuracy | {cv['mean']:.4f} +- {cv['std']:.4f} "
                         f"(mean +- sd) |")
        if ms_per_clip is not None:
            lines.append(f"| forward cost | {ms_per_clip:.2f} ms/clip (batched, 2-core CPU) |")
        lines.append("")
    if t:
        skip = {"train_folds", "val_folds", "test_folds", "limit", "threads", "init_from", "pretrained"}
        lines += ["Training configuration: " + ", ".join(f"{k}={v}" for k, v in t.items() if k not in skip), ""]
    if cv:
        lines += ["Cross-validation (each fold in turn the test fold, the one before it validation):", "",
                  "| test fold | validation fold | test accuracy | best epoch |", "|---|---|---|---|"]
        lines += [f"| {r['test_fold']} | {r['val_fold']} | {r['test_acc']:.4f} | {r['best_epoch']} |"
                  for r in cv["folds"]]
        lines.append("")
    lines += ["Package versions: " + ", ".join(f"{k} {v}" for k, v in ckpt.get("versions", {}).items()), ""]
    if report is not None:
        lines += [report_markdown(report, figure)]
    return "\n".join(lines)
