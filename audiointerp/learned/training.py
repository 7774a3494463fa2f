"""Training of the learned interpreters on a frozen classifier (folds 1-3 train, fold 4 selects).

The classifier's hidden maps, logits and the clips' log1p STFTs are computed once and cached
(:func:`interpreter_data`); only the interpreter's parameters are optimised (Adam); the state
kept is the epoch with the lowest validation loss, not the last (:func:`fit_interpreter`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..processing import FeatureConfig, log1p_stft
from ..provenance import file_sha256, git_commit
from .base import HiddenMap
from .checkpoints import KINDS, build_interpreter, save_interpreter
from .l2i import L2IInterpreter


@dataclass
class InterpreterTrainConfig:
    """How :func:`train_interpreter` trains an interpreter (defaults: the committed runs).

    Attributes:
        kind: ``l2i`` or ``piq``.
        checkpoint: the frozen classifier.
        nmf: the NMF dictionary file (L2I only; default ``weights/nmf_<classifier stem>.pt``).
        epochs: maximum epochs; max_minutes: stop after the epoch that passes this wall time.
        batch_size, lr, weight_decay: Adam's settings.
        seed: initialisation and shuffling.
        train_folds, val_folds: ESC-50 folds (1-3 train, 4 validation; fold 5 is never seen).
        limit: use only the first ``limit`` clips of each split (tests, dry runs).
        args: constructor overrides (e.g. ``{"width": 128}`` or L2I's ``alpha``/``beta``/``tau``).
        threads: torch threads (None: leave as is).
    """

    kind: str = "l2i"
    checkpoint: str = "weights/compact_mel.pt"
    nmf: str | None = None
    epochs: int = 40
    max_minutes: float = 55.0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    train_folds: tuple = (1, 2, 3)
    val_folds: tuple = (4,)
    limit: int | None = None
    args: dict = field(default_factory=dict)
    threads: int | None = None

    def validate(self) -> None:
        """Raise ConfigError naming a bad value."""
        if self.kind not in KINDS:
            raise ConfigError(f"unknown interpreter kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0 or not self.max_minutes > 0:
            raise ConfigError(f"lr and max_minutes must be > 0, got {self.lr!r}, {self.max_minutes!r}")
        if set(self.train_folds) & set(self.val_folds) or 5 in set(self.train_folds) | set(self.val_folds):
            raise ConfigError(f"train folds {self.train_folds} and validation folds {self.val_folds} must be "
                              f"disjoint and exclude the test fold 5")


@dataclass
class InterpreterData:
    """Cached inputs of interpreter training for one split: the frozen classifier's hidden maps
    ``[n, C, F', T']`` and logits ``[n, n_classes]``, and log1p STFTs ``[n, F, T]`` (float32)."""

    hidden: torch.Tensor
    logits: torch.Tensor
    L: torch.Tensor

    def __len__(self) -> int:
        return len(self.hidden)


def interpreter_data(model: nn.Module, cfg: FeatureConfig, root, folds, limit: int | None = None,
                     batch_size: int = 64, progress: bool = False) -> InterpreterData:
    """Run the frozen classifier once over ``folds`` (clean) and cache what training needs.

    Features come from the feature cache (:func:`audiointerp.data.fold_features`); waveforms
    are read once for the log1p STFTs.
    """
    from tqdm.auto import tqdm

    from ..data import ESC50, fold_features

    ds = ESC50(root, tuple(folds), cfg.sample_rate, cfg.duration)
    n = len(ds) if limit is None else min(int(limit), len(ds))
    feats = fold_features(ds, cfg, progress=progress)[:n]
    hm = HiddenMap(model)
    hidden, logits, Ls = [], [], []
    with torch.no_grad():
        for s in tqdm(range(0, n, batch_size), desc=f"folds {tuple(folds)}", disable=not progress):
            idx = list(range(s, min(s + batch_size, n)))
            lg, h = hm(feats[idx])
            hidden.append(h)
            logits.append(lg)
            Ls.append(log1p_stft(ds.waveforms(idx), cfg)[0])
    return InterpreterData(torch.cat(hidden), torch.cat(logits), torch.cat(Ls))


def _evaluate(net: nn.Module, data: InterpreterData, batch_size: int) -> dict:
    sums, n = {}, 0
    agree = 0
    net.eval()
    with torch.no_grad():
        for s in range(0, len(data), batch_size):
            sl = slice(s, s + batch_size)
            terms = net.losses(data.hidden[sl], data.L[sl], data.logits[sl])
            b = len(data.hidden[sl])
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * b
            if isinstance(net, L2IInterpreter):
                pred = net.surrogate(net.activations(data.hidden[sl])).argmax(1)
                agree += int((pred == data.logits[sl].argmax(1)).sum())
            n += b
    out = {k: v / n for k, v in sums.items()}
    if isinstance(net, L2IInterpreter):
        out["surrogate_agreement"] = agree / n
    return out


def new_interpreter(kind: str, cfg: FeatureConfig, hidden_shape, n_classes: int,
                    W: torch.Tensor | None = None, **args) -> nn.Module:
    """A freshly initialised interpreter of ``kind`` for a classifier with hidden map
    ``hidden_shape (C, F', T')`` and features ``cfg`` (masks cover ``[n_fft//2+1, n_frames]``)."""
    if kind == "l2i":
        return build_interpreter("l2i", {"hidden_shape": list(hidden_shape), "n_frames": cfg.n_frames,
                                         "n_classes": n_classes, **args}, W)
    return build_interpreter("piq", {"hidden_shape": list(hidden_shape),
                                     "out_shape": [cfg.n_fft // 2 + 1, cfg.n_frames], "n_classes": n_classes,
                                     **args})


def fit_interpreter(net: nn.Module, train: InterpreterData, val: InterpreterData, epochs: int, batch_size: int,
                    lr: float, seed: int = 0, weight_decay: float = 0.0, max_minutes: float = math.inf,
                    progress: bool = False, on_epoch=None) -> dict:
    """Train ``net`` on cached data with Adam; keep the state of the epoch with the lowest
    validation loss (the returned net holds it).

    Only the interpreter's parameters are optimised (the classifier is not involved: its hidden
    maps and logits are cached tensors).

    Returns:
        ``{"history": [per-epoch train/val losses], "best_epoch", "best_val", "epochs_run",
        "minutes"}``.
    """
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    history, best, best_state = [], math.inf, None
    t0 = time.perf_counter()
    for epoch in tqdm(range(1, epochs + 1), desc=f"train {net.kind}", disable=not progress):
        net.train()
        order = torch.randperm(len(train), generator=gen)
        sums, n = {}, 0
        for s in range(0, len(train), batch_size):
            idx = order[s:s + batch_size]
            terms = net.losses(train.hidden[idx], train.L[idx], train.logits[idx])
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
            n += len(idx)
        row = {"epoch": epoch, **{f"train_{k}": v / n for k, v in sums.items()},
               **{f"val_{k}": v for k, v in _evaluate(net, val, batch_size).items()},
               "minutes": (time.perf_counter() - t0) / 60}
        history.append(row)
        if row["val_total"] < best:
            best, best_state = row["val_total"], copy.deepcopy(net.state_dict())
        if on_epoch is not None:
            on_epoch(row)
        if row["minutes"] >= max_minutes:
            break
    net.load_state_dict(best_state)
    net.eval()
    best_row = min(history, key=lambda r: r["val_total"])
    return {"history": history, "best_epoch": best_row["epoch"], "best_val": best_row, "epochs_run": len(history),
            "minutes": (time.perf_counter() - t0) / 60}


def train_interpreter(cfg: InterpreterTrainConfig, out, root=None, progress: bool = True) -> dict:
    """Train an L2I or PIQ interpreter on a frozen classifier and write its checkpoint to ``out``.

    Returns:
        the fit summary of :func:`fit_interpreter` plus ``"path"`` and the data-caching minutes.

    Raises:
        ConfigError: bad configuration. CheckpointError: bad classifier or dictionary file.
        DatasetError: no ESC-50 root.
    """
    from ..models import load_classifier, model_name
    from ..nmf import NMFDictionary

    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    model, extractor, ckpt = load_classifier(cfg.checkpoint)
    for p in model.parameters():
        p.requires_grad_(False)
    fcfg = extractor.cfg
    W, nmf_info = None, None
    if cfg.kind == "l2i":
        nmf_path = cfg.nmf or str(Path(cfg.checkpoint).parent / f"nmf_{Path(cfg.checkpoint).stem}.pt")
        d = NMFDictionary.load(nmf_path)
        d.check(fcfg)
        W, nmf_info = d.W, {"path": Path(nmf_path).name, "sha256": file_sha256(nmf_path)}
    t0 = time.perf_counter()
    train = interpreter_data(model, fcfg, root, cfg.train_folds, cfg.limit, progress=progress)
    val = interpreter_data(model, fcfg, root, cfg.val_folds, cfg.limit, progress=progress)
    cache_minutes = (time.perf_counter() - t0) / 60
    torch.manual_seed(cfg.seed)
    net = new_interpreter(cfg.kind, fcfg, train.hidden.shape[1:], train.logits.shape[1], W, **cfg.args)
    summary = fit_interpreter(net, train, val, cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed, cfg.weight_decay,
                              cfg.max_minutes, progress)
    classifier = {"path": Path(cfg.checkpoint).name, "sha256": file_sha256(cfg.checkpoint), "name": model_name(ckpt),
                  "architecture": ckpt["architecture"], "arch_args": ckpt["arch_args"]}
    training = {"config": asdict(cfg), "git_commit": git_commit(), "cache_minutes": cache_minutes,
                "n_train": len(train), "n_val": len(val), **summary}
    path = save_interpreter(out, net, classifier, fcfg, training, metrics=summary["best_val"], nmf=nmf_info)
    return {**summary, "path": str(path), "cache_minutes": cache_minutes}
