"""Training a classifier on ESC-50 features: folds 1-3 train, fold 4 validation, fold 5 test.

Features of whole folds are computed once and cached (:func:`audiointerp.data.fold_features`);
augmentation works on the cached dB features:

* random circular time shift and random gain (dB offset),
* SpecAugment frequency and time masks (Park et al., Interspeech 2019) filled with the -100 dB
  floor, i.e. the same "silence" the interpretation masks produce,
* optional mixup (Zhang et al., ICLR 2018) with Beta(alpha, alpha) weights and label smoothing;
* optional knowledge distillation from teacher checkpoints (Hinton et al., 2015: soft targets,
  :func:`teacher_targets`) and an exponential moving average of the weights (Polyak & Juditsky
  1992; ``torch.optim.swa_utils``), the two levers of issue 15 not measured before.

The best-validation weights are kept as a *copy* (not the last epoch). Training is seeded and
checkpointed every epoch to ``<out>.state.pt``, so an interrupted run resumes from the same step.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from .config import csv_ints, csv_list, option, optional
from .data import ESC50, TEST_FOLDS, TRAIN_FOLDS, VAL_FOLDS, fold_features
from .devices import DEVICE_CHOICES, describe_device, resolve_device
from .errors import CheckpointError, ConfigError
from .models import (
    build_model,
    check_contract,
    clone_state,
    load_classifier,
    load_panns_cnn14,
    load_weights,
    predict_logits,
    read_checkpoint,
    save_checkpoint,
)
from .processing import FLOOR_DB, FeatureConfig
from .provenance import file_sha256


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train` (all recorded in the checkpoint).

    Attributes:
        features: ``"mel"`` or ``"stft"`` (default feature configuration of that kind).
        architecture, arch_args: model to build (``n_freq``/``n_classes`` are filled in).
        epochs, batch_size, lr (peak, one-cycle cosine), weight_decay (AdamW).
        mixup_alpha: Beta parameter of mixup (0 disables it).
        label_smoothing: cross-entropy label smoothing.
        freq_mask, time_mask: maximum SpecAugment mask widths in rows/frames (two of each).
        max_shift: maximum circular time shift as a fraction of the clip.
        gain_db: maximum random gain in dB (+-).
        seed: seeds python, numpy and torch.
        threads: torch intra-op threads (0 = leave as is).
        train_folds, val_folds, test_folds: fold split.
        limit: use only the first N clips of each split (tests).
        init_from: checkpoint whose weights start the training (a second schedule after a
            first one; architecture and features must match), or None for random init.
        pretrained: a PANNs CNN14 checkpoint (``architecture="Cnn14"``): every weight but the
            output layer (and, for the 257-bin STFT, the frequency normalisation) starts from
            AudioSet (Kong et al., PANNs, 2020; :func:`audiointerp.models.load_panns_cnn14`).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps``
            (:func:`audiointerp.devices.resolve_device`); recorded in the checkpoint's metrics.
        amp: bfloat16 autocast of the training steps (CUDA only); validation and test run in
            float32, so accuracies mean the same thing on every device.
        teachers: classifier checkpoints (any features, the same classes) whose averaged
            ``softmax(logits / kd_temperature)`` on the clean training clips become soft targets
            (:func:`teacher_targets`); their SHA-256 digests are recorded in the metrics.
        kd_weight: the target of a training clip is ``(1 − kd_weight) · smoothed one-hot +
            kd_weight · teacher probabilities`` (then mixed by mixup like the labels), fitted by
            cross-entropy at temperature 1 (Hinton et al., 2015, soft-target form without the T²
            rescaling); 0 (default) trains on the labels only.
        kd_temperature: softmax temperature of the teachers (> 0).
        ema_decay: decay of an exponential moving average of the weights and BatchNorm buffers,
            updated every step (0: off). When on, validation, model selection and the saved
            weights are the average's.
    """

    features: str = option("mel", choices=("mel", "stft"), help="feature kind (the default configuration of that kind)")
    architecture: str = option("CompactCNN", parse=str, choices=("CompactCNN", "Cnn14"),
                               help="model to build: a name, or your own class as 'package.module:Class' or "
                                    "'path/to/file.py:Class' (models.build_model)")
    pretrained: str | None = option(None, parse=optional(str), metavar="PATH",
                                    help="PANNs CNN14 checkpoint to fine-tune from (Cnn14 only), e.g. "
                                         "pretrained/Cnn14_16k_mAP=0.438.pth")
    arch_args: dict = option(default_factory=dict, cli=False, help="constructor arguments of the model")
    epochs: int = option(60, help="training epochs")
    batch_size: int = option(32, help="clips per step")
    lr: float = option(3e-3, help="peak learning rate (one-cycle cosine)")
    weight_decay: float = option(1e-2, help="AdamW weight decay")
    mixup_alpha: float = option(0.4, help="Beta parameter of mixup (0 disables it)")
    label_smoothing: float = option(0.05, help="cross-entropy label smoothing")
    freq_mask: int = option(8, help="maximum SpecAugment frequency-mask width in rows (two masks)")
    time_mask: int = option(40, help="maximum SpecAugment time-mask width in frames (two masks)")
    max_shift: float = option(0.25, help="maximum circular time shift, as a fraction of the clip")
    gain_db: float = option(6.0, help="maximum random gain in dB (+-)")
    seed: int = option(0, help="seed of python, numpy and torch")
    threads: int = option(0, help="torch intra-op threads (0: leave as is)")
    train_folds: tuple = option(TRAIN_FOLDS, parse=csv_ints, help="training folds, comma-separated")
    val_folds: tuple = option(VAL_FOLDS, parse=csv_ints, help="validation folds (model selection)")
    test_folds: tuple = option(TEST_FOLDS, parse=csv_ints, help="test folds")
    limit: int | None = option(None, parse=optional(int), help="only the first N clips of each split (tests)")
    init_from: str | None = option(None, parse=optional(str), metavar="PATH",
                                   help="start from this checkpoint's weights (a second schedule)")
    device: str = option("auto", parse=str, choices=DEVICE_CHOICES,
                         help="where to train: auto (CUDA when available), cpu, cuda, cuda:N, mps")
    metadata: str = option("esc50.csv", help="the dataset's csv under meta/ (another dataset laid out like ESC-50)")
    sample_rate: int | None = option(None, parse=optional(int),
                                     help="model rate in Hz (none: the feature kind's default, 16000)")
    duration: float | None = option(None, parse=optional(float),
                                    help="clip length in seconds (none: the feature kind's default, 5.0)")
    amp: bool = option(False, help="mixed precision (bfloat16 autocast) for training on a CUDA device; "
                                   "evaluation stays float32")
    teachers: tuple = option((), parse=lambda s: tuple(csv_list(s)), metavar="PATH[,PATH...]",
                             help="teacher checkpoints for knowledge distillation (comma-separated; any features)")
    kd_weight: float = option(0.0, help="weight of the teachers' soft targets in [0, 1] (0: labels only)")
    kd_temperature: float = option(2.0, help="softmax temperature of the teachers")
    ema_decay: float = option(0.0, help="decay of an exponential moving average of the weights (0: off), e.g. 0.999")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator):
    """Mix each example with a random partner: ``lam*x + (1-lam)*x[perm]``, same for targets.

    Args:
        x: ``[batch, ...]``; y: soft targets ``[batch, n_classes]`` (rows sum to 1).
        alpha: Beta(alpha, alpha) parameter; 0 returns the inputs unchanged.

    Returns:
        ``(x_mixed, y_mixed)`` with the input shapes; target rows still sum to 1.
    """
    if alpha <= 0:
        return x, y
    lam = torch.distributions.Beta(alpha, alpha).sample((x.shape[0],)).to(x)
    lam = torch.maximum(lam, 1 - lam)  # the first clip dominates
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    lx = lam.view(-1, *([1] * (x.dim() - 1)))
    return lx * x + (1 - lx) * x[perm], lam[:, None] * y + (1 - lam[:, None]) * y[perm]


def augment(x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Time shift, gain and SpecAugment on dB features ``[batch, 1, n_freq, n_frames]``.

    Returns a tensor of the same shape, values >= -100 dB.
    """
    b, _, n_freq, n_frames = x.shape
    if cfg.max_shift > 0:
        max_s = int(cfg.max_shift * n_frames)
        shifts = torch.randint(-max_s, max_s + 1, (b,), generator=generator)
        idx = ((torch.arange(n_frames)[None, :] - shifts[:, None]) % n_frames).to(x.device)
        x = torch.gather(x, 3, idx[:, None, None, :].expand(b, 1, n_freq, n_frames))
    if cfg.gain_db > 0:
        gain = (torch.rand(b, generator=generator) * 2 - 1) * cfg.gain_db
        x = (x + gain.view(b, 1, 1, 1).to(x.device)).clamp_min(FLOOR_DB)
    for _ in range(2):
        if cfg.freq_mask > 0:
            x = AF.mask_along_axis_iid(x, cfg.freq_mask, FLOOR_DB, axis=2)
        if cfg.time_mask > 0:
            x = AF.mask_along_axis_iid(x, cfg.time_mask, FLOOR_DB, axis=3)
    return x


def teacher_targets(teachers, dataset: ESC50, temperature: float = 2.0, device=None) -> torch.Tensor:
    """Soft targets for knowledge distillation: the teachers' averaged tempered probabilities.

    Each teacher sees the clean (un-augmented) clips of ``dataset`` through its own feature
    configuration (features cached by content, :func:`audiointerp.data.fold_features`), so
    teachers on other features (e.g. an STFT model teaching a mel model: a cross-feature
    ensemble) work. Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015.

    Args:
        teachers: paths of classifier checkpoints (:func:`audiointerp.models.save_checkpoint`).
        dataset: the training clips.
        temperature: softmax temperature T (> 0): ``softmax(logits / T)``.
        device: where the teachers run (None: CPU).

    Returns:
        float32 ``[n_clips, n_classes]``, rows summing to 1, on ``device``.

    Raises:
        ConfigError: no teacher, a temperature <= 0, a teacher with other classes than the
            dataset (names the file), or features whose rate or clip length differ from the
            dataset's (both quoted).
        CheckpointError: an unreadable teacher checkpoint (named).

    """
    if not teachers:
        raise ConfigError("teacher_targets needs at least one teacher checkpoint")
    if not temperature > 0:
        raise ConfigError(f"kd_temperature must be > 0, got {temperature}")
    probs = []
    for path in teachers:
        model, _, ckpt = load_classifier(path, device=device)
        if list(ckpt["class_names"]) != list(dataset.class_names):
            raise ConfigError(f"teacher {path} has classes {list(ckpt['class_names'])[:3]}... "
                              f"({len(ckpt['class_names'])}), not the dataset's ({len(dataset.class_names)})")
        feats = fold_features(dataset, FeatureConfig.from_dict(ckpt["features"]))
        with torch.inference_mode():
            probs.append(torch.softmax(predict_logits(model, feats).float() / temperature, 1))
    return torch.stack(probs).mean(0)


def accuracy(model: torch.nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on features and int64 labels ``[n]``."""
    if len(labels) == 0:
        return float("nan")
    logits = predict_logits(model, feats)
    return (logits.argmax(1) == labels.to(logits.device)).float().mean().item()


def _split(cfg: TrainConfig, folds, feature_cfg: FeatureConfig, root):
    ds = ESC50(root, folds, feature_cfg.sample_rate, feature_cfg.duration, metadata=cfg.metadata)
    feats = fold_features(ds, feature_cfg, progress=True)
    labels = torch.from_numpy(ds.labels.copy())
    if cfg.limit:
        feats, labels = feats[:cfg.limit], labels[:cfg.limit]
    return ds, feats, labels


def train(cfg: TrainConfig, out: str | os.PathLike, root=None, progress: bool = True) -> dict:
    """Train a classifier and write its checkpoint to ``out``.

    Args:
        cfg: :class:`TrainConfig`.
        out: checkpoint path (``.pt``); training state goes to ``<out>.state.pt`` each epoch
            and a run with the same config resumes from it.
        root: ESC-50 root (None: ``ESC50_ROOT``).

    Returns:
        metrics dict: best epoch, validation and test accuracy, training seconds, history.

    Raises:
        ConfigError: bad configuration values. DatasetError: bad dataset root.
    """
    from tqdm.auto import tqdm

    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be >= 1, got {cfg.epochs}, {cfg.batch_size}")
    if cfg.pretrained and cfg.architecture != "Cnn14":
        raise ConfigError(f"pretrained={cfg.pretrained!r} is a PANNs CNN14 checkpoint: it needs architecture='Cnn14', "
                          f"not {cfg.architecture!r}")
    if cfg.pretrained and cfg.init_from:
        raise ConfigError("give either pretrained (PANNs weights) or init_from (an audiointerp checkpoint), not both")
    if not 0.0 <= cfg.kd_weight <= 1.0:
        raise ConfigError(f"kd_weight must be in [0, 1], got {cfg.kd_weight}")
    if cfg.kd_weight > 0 and not cfg.teachers:
        raise ConfigError(f"kd_weight={cfg.kd_weight} needs teachers (teacher checkpoints)")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
    device = resolve_device(cfg.device)
    if cfg.amp and device.type != "cuda":
        raise ConfigError(f"amp (mixed precision) is for CUDA devices; device {cfg.device!r} is {device}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    feature_cfg = feature_config(cfg)
    seed_everything(cfg.seed)
    ds_tr, x_tr, y_tr = _split(cfg, cfg.train_folds, feature_cfg, root)
    _, x_va, y_va = _split(cfg, cfg.val_folds, feature_cfg, root)
    _, x_te, y_te = _split(cfg, cfg.test_folds, feature_cfg, root)
    n_classes = len(ds_tr.class_names)
    arch_args = {"n_freq": feature_cfg.n_freq, "n_classes": n_classes, **cfg.arch_args}
    if cfg.features == "stft" and cfg.architecture == "CompactCNN":
        # 257 rows: a narrow first block and 4x frequency pooling keep the cost at the mel model's
        arch_args.setdefault("first_pool", (4, 2))
        arch_args.setdefault("channels", (8, 32, 64, 128))
    if cfg.pretrained:
        model = load_panns_cnn14(cfg.pretrained, n_classes=n_classes, n_freq=feature_cfg.n_freq)
    else:
        model = build_model(cfg.architecture, **arch_args)
    if cfg.architecture not in ("CompactCNN", "Cnn14"):  # your own class: checked before any training
        check_contract(model, feature_cfg.n_freq, feature_cfg.n_frames, n_classes)
    if cfg.init_from:
        init = read_checkpoint(cfg.init_from)
        if init["architecture"] != cfg.architecture or init["features"] != feature_cfg.to_dict():
            raise CheckpointError(f"init_from {cfg.init_from} is a {init['architecture']} on {init['features']}, "
                                  f"not a {cfg.architecture} on {feature_cfg.to_dict()}")
        load_weights(model, init["state_dict"], f"init_from {cfg.init_from}: weights do not fit {arch_args}")
    model = model.to(device, memory_format=torch.channels_last)
    x_tr, y_tr, x_va, y_va, x_te, y_te = (t.to(device) for t in (x_tr, y_tr, x_va, y_va, x_te, y_te))
    soft = teacher_targets(cfg.teachers, ds_tr, cfg.kd_temperature, device) if cfg.kd_weight > 0 else None
    if soft is not None and cfg.limit:
        soft = soft[:cfg.limit]
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(
        cfg.ema_decay), use_buffers=True) if cfg.ema_decay > 0 else None)
    kept = model if ema is None else ema.module  # the weights validated, selected and saved
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(x_tr) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.1, anneal_strategy="cos")
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(out)
    state_path = out.with_name(out.name + ".state.pt")
    start_epoch, best, history, elapsed = 0, {"val_acc": -1.0, "epoch": -1, "state": None}, [], 0.0
    if state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        if _resume_key(st["config"]) == _resume_key(asdict(cfg)):  # resumable on another device
            model.load_state_dict(st["model"])
            if ema is not None:
                ema.load_state_dict(st["ema"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            gen.set_state(st["gen"])
            torch.set_rng_state(st["torch_rng"].cpu())
            start_epoch, best, history, elapsed = st["epoch"], st["best"], st["history"], st["elapsed"]
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"train {cfg.features}", disable=not progress,
               initial=start_epoch, total=cfg.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for s in range(0, len(perm), cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            xb = augment(x_tr[idx.to(device)], cfg, gen)
            yb = F.one_hot(y_tr[idx.to(device)], n_classes).float()
            yb = yb * (1 - cfg.label_smoothing) + cfg.label_smoothing / n_classes
            if soft is not None:
                yb = (1 - cfg.kd_weight) * yb + cfg.kd_weight * soft[idx.to(device)]
            xb, yb = mixup(xb, yb, cfg.mixup_alpha, gen)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                logits = model(xb.contiguous(memory_format=torch.channels_last))
            loss = -(yb * F.log_softmax(logits.float(), 1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            total += loss.item() * len(idx)
        val_acc = accuracy(kept, x_va, y_va)
        elapsed += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "loss": total / len(x_tr), "val_acc": val_acc,
                        "lr": sched.get_last_lr()[0], "seconds": elapsed})
        if val_acc > best["val_acc"]:
            best = {"val_acc": val_acc, "epoch": epoch + 1, "state": clone_state(kept)}
        bar.set_postfix(loss=f"{total / len(x_tr):.3f}", val=f"{val_acc:.3f}", best=f"{best['val_acc']:.3f}")
        tmp = state_path.with_name(state_path.name + ".tmp")
        state_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": asdict(cfg), "model": model.state_dict(), "opt": opt.state_dict(),
                    "ema": None if ema is None else ema.state_dict(),
                    "sched": sched.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                    "epoch": epoch + 1, "best": best, "history": history, "elapsed": elapsed}, tmp)
        os.replace(tmp, state_path)
    model.load_state_dict(best["state"])
    metrics = {"best_epoch": best["epoch"], "val_acc": best["val_acc"],
               "test_acc": accuracy(model, x_te, y_te), "train_seconds": round(elapsed, 1),
               "n_train": len(x_tr), "n_val": len(x_va), "n_test": len(x_te), "history": history,
               "device": describe_device(device)}
    if cfg.teachers and cfg.kd_weight > 0:
        metrics["teachers"] = {str(p): file_sha256(p) for p in cfg.teachers}
    save_checkpoint(out, model, arch_args, feature_cfg, ds_tr.class_names, metrics=metrics, training=asdict(cfg))
    return metrics


def feature_config(cfg: TrainConfig) -> FeatureConfig:
    """The :class:`~audiointerp.processing.FeatureConfig` of a training configuration: the default
    of ``cfg.features`` with ``cfg.sample_rate`` / ``cfg.duration`` when given.

    Raises:
        ConfigError: a bad feature kind, rate or duration (e.g. a mel ``f_max`` above the Nyquist rate).
    """
    over = {k: v for k, v in (("sample_rate", cfg.sample_rate), ("duration", cfg.duration)) if v is not None}
    return replace(FeatureConfig.default(cfg.features), **over)


def _resume_key(config: dict) -> dict:
    """The part of a training configuration a resumed run must share (not where it runs)."""
    return {k: v for k, v in config.items() if k not in ("device", "threads")}


CV_FOLDS = (1, 2, 3, 4, 5)


def cv_split(test_fold: int, folds=CV_FOLDS) -> tuple[tuple, tuple, tuple]:
    """``(train_folds, val_folds, test_folds)`` of one cross-validation run.

    The validation fold is the one before the test fold, cyclically (test 5 -> validation 4,
    training 1-3: the default split; test 1 -> validation 5), the other folds train.

    Raises:
        ConfigError: ``test_fold`` not in ``folds`` or fewer than 3 folds.
    """
    folds = tuple(int(f) for f in folds)
    if len(folds) < 3 or test_fold not in folds:
        raise ConfigError(f"test_fold {test_fold!r} must be one of at least 3 folds, got folds {list(folds)}")
    i = folds.index(test_fold)
    val = folds[i - 1]
    return tuple(f for f in folds if f not in (test_fold, val)), (val,), (test_fold,)


def cross_validate(cfg: TrainConfig, out_dir: str | os.PathLike, root=None, folds=CV_FOLDS,
                   progress: bool = True) -> dict:
    """K-fold cross-validation of a recipe, as ESC-50 results are reported (Piczak 2015).

    Each fold in turn is the test fold, the fold before it (cyclically) selects the best epoch,
    the rest train (:func:`cv_split`); everything else is ``cfg``. Each run is an ordinary
    :func:`train` run written to ``<out_dir>/fold<k>.pt`` (resumable from its ``.state.pt``); a
    fold whose checkpoint already holds this configuration is read, not retrained, so an
    interrupted cross-validation continues where it stopped. The summary goes to
    ``<out_dir>/cv.json``.

    Args:
        cfg: the recipe; its fold fields are replaced per run.
        out_dir: folder of the per-fold checkpoints and ``cv.json``.
        root: ESC-50 root (None: ``ESC50_ROOT``).
        folds: the folds (default 1-5).

    Returns:
        ``{"folds": [{"test_fold", "val_fold", "test_acc", "val_acc", "best_epoch",
        "train_seconds"}], "mean": float, "std": float, "n_folds": int, "config": dict}``:
        test accuracy mean and sample standard deviation (ddof = 1) over the folds, in [0, 1].

    Raises:
        ConfigError: bad configuration or folds. DatasetError: bad dataset root.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in folds:
        train_f, val_f, test_f = cv_split(k, folds)
        fold_cfg = replace(cfg, train_folds=train_f, val_folds=val_f, test_folds=test_f)
        path = out_dir / f"fold{k}.pt"
        done = read_checkpoint(path) if path.is_file() else None
        if done is not None and _resume_key(done.get("training", {})) == _resume_key(asdict(fold_cfg)):
            m = done["metrics"]
        else:
            m = train(fold_cfg, path, root=root, progress=progress)
        rows.append({"test_fold": k, "val_fold": val_f[0], "test_acc": m["test_acc"], "val_acc": m["val_acc"],
                     "best_epoch": m["best_epoch"], "train_seconds": m["train_seconds"]})
    accs = np.array([r["test_acc"] for r in rows], dtype=float)
    summary = {"folds": rows, "mean": float(accs.mean()),
               "std": float(accs.std(ddof=1)) if len(accs) > 1 else float("nan"),
               "n_folds": len(rows), "config": {k: v for k, v in asdict(cfg).items()
                                                if k not in ("train_folds", "val_folds", "test_folds")}}
    tmp = out_dir / "cv.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=list))
    os.replace(tmp, out_dir / "cv.json")
    return summary
