"""Training of the learned interpreters on a frozen classifier (folds 1-3 train, fold 4 selects).

L2I and PIQ: the classifier's hidden maps, logits and the clips' log1p STFTs are computed once and
cached (:func:`interpreter_data`); only the interpreter's parameters are optimised (Adam); the state
kept is the epoch with the lowest validation loss, not the last (:func:`fit_interpreter`).

L-MAC (:func:`train_lmac`, :func:`fit_lmac`): its loss runs the frozen classifier on the masked-in
and masked-out inputs at every step, so only the input side is cached (:func:`lmac_data`: the
clean clips' block outputs, logits and log1p STFTs); guided fine-tuning mixes clips afresh each
epoch and runs the classifier's frozen forward on the mixtures. Training is resumable: the whole
state (decoder, Adam, generator, history, best epoch, elapsed time) is written to
``<out>.state.pt`` after every epoch, and a killed run resumes from the epoch it finished last.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, ConfigError
from ..processing import FeatureConfig, log1p_stft, magnitude_to_features
from ..provenance import file_sha256, git_commit
from .base import HiddenMap, HiddenMaps, default_lmac_layers
from .checkpoints import KINDS, build_interpreter, load_interpreter, save_interpreter
from .l2i import L2IInterpreter
from .lmac import LMACInterpreter, draw_partners, magnitude_classifier, mix_with_partners


@dataclass
class InterpreterTrainConfig:
    """How :func:`train_interpreter` trains an interpreter (defaults: the committed runs).

    Attributes:
        kind: ``l2i`` or ``piq``.
        checkpoint: the frozen classifier.
        nmf: the NMF dictionary file (L2I only; default ``weights/nmf_<classifier stem>.pt``).
        epochs: maximum epochs; max_minutes: stop after the epoch that passes this wall time (summed over
            resumed sessions).
        patience: stop once the fold-4 validation loss has not fallen for this many epochs (early stopping:
            "until the validation loss stops falling"); None: run to ``epochs`` or ``max_minutes``.
        batch_size, lr, weight_decay: Adam's settings.
        seed: initialisation and shuffling.
        train_folds, val_folds: ESC-50 folds (1-3 train, 4 validation; fold 5 is never seen).
        limit: use only the first ``limit`` clips of each split (tests, dry runs).
        args: constructor overrides (e.g. ``{"width": 128}`` or L2I's ``alpha``/``beta``/``tau``).
        threads: torch threads (None: leave as is).
        device: where the classifier and the interpreter run (``auto``: CUDA when available, ``cpu``,
            ``cuda:N``, ``mps``; :func:`audiointerp.devices.resolve_device`).
    """

    kind: str = "l2i"
    checkpoint: str = "weights/compact_mel.pt"
    nmf: str | None = None
    epochs: int = 40
    max_minutes: float = 55.0
    patience: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    train_folds: tuple = (1, 2, 3)
    val_folds: tuple = (4,)
    limit: int | None = None
    args: dict = field(default_factory=dict)
    threads: int | None = None
    device: str = "auto"

    def validate(self) -> None:
        """Raise ConfigError naming a bad value."""
        if self.kind not in KINDS:
            raise ConfigError(f"unknown interpreter kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0 or not self.max_minutes > 0:
            raise ConfigError(f"lr and max_minutes must be > 0, got {self.lr!r}, {self.max_minutes!r}")
        if self.patience is not None and int(self.patience) < 1:
            raise ConfigError(f"patience must be >= 1 epochs or None, got {self.patience!r}")
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
    dev = next(iter(model.parameters()), feats).device  # the cache lives on the model's device
    hidden, logits, Ls = [], [], []
    with torch.no_grad():
        for s in tqdm(range(0, n, batch_size), desc=f"folds {tuple(folds)}", disable=not progress):
            idx = list(range(s, min(s + batch_size, n)))
            lg, h = hm(feats[idx].to(dev))
            hidden.append(h)
            logits.append(lg)
            Ls.append(log1p_stft(ds.waveforms(idx).to(dev), cfg)[0])
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
    ``hidden_shape (C, F', T')`` and features ``cfg`` (masks cover ``[n_fft//2+1, n_frames]``).

    For ``lmac``, ``hidden_shape`` is the list of the block outputs' shapes and ``args`` must hold their
    ``layers`` (names); ``n_classes`` and ``W`` are not used.
    """
    if kind == "lmac":
        return build_interpreter("lmac", {"hidden_shapes": [list(s) for s in hidden_shape],
                                          "out_shape": [cfg.n_fft // 2 + 1, cfg.n_frames], **args})
    if kind == "l2i":
        return build_interpreter("l2i", {"hidden_shape": list(hidden_shape), "n_frames": cfg.n_frames,
                                         "n_classes": n_classes, **args}, W)
    return build_interpreter("piq", {"hidden_shape": list(hidden_shape),
                                     "out_shape": [cfg.n_fft // 2 + 1, cfg.n_frames], "n_classes": n_classes,
                                     **args})


def _optimiser_step(opt: torch.optim.Optimizer, terms: dict, sums: dict, n_items: int) -> None:
    """One Adam step on ``terms["total"]`` (a scalar loss tensor); adds each term times ``n_items`` (the batch
    size) to ``sums`` so that an epoch's means weight every item once."""
    opt.zero_grad(set_to_none=True)
    terms["total"].backward()
    opt.step()
    for k, v in terms.items():
        sums[k] = sums.get(k, 0.0) + float(v.detach()) * n_items


def stop_reason(history: list, epochs: int, max_minutes: float, patience: int | None) -> str | None:
    """Why a training whose per-epoch ``history`` (rows with ``epoch``, ``val_total`` and cumulative
    ``minutes``) should stop before its next epoch, or None to go on: ``"patience"`` (the validation loss
    has not fallen for ``patience`` epochs: the lowest is ``patience`` or more epochs back), ``"max_minutes"``
    (the wall-time budget is spent) or ``"epochs"`` (the maximum is reached)."""
    if not history:
        return None
    best = min(history, key=lambda r: r["val_total"])["epoch"]
    if patience is not None and history[-1]["epoch"] - best >= int(patience):
        return "patience"
    if history[-1]["minutes"] >= max_minutes:
        return "max_minutes"
    if history[-1]["epoch"] >= epochs:
        return "epochs"
    return None


#: fields that may change between the sessions of one resumable run (they do not change finished epochs)
RESUMABLE_CHANGES = ("epochs", "max_minutes", "patience", "threads", "device")  # where it runs may change too


def _resume_state(path: Path | None, identity: dict) -> dict | None:
    """The saved training state at ``path`` (None when there is none), refused when it is another run's."""
    from ..models import load_torch_file

    if path is None or not path.is_file():
        return None
    st = load_torch_file(path, "interpreter training state")
    if not isinstance(st, dict) or st.get("identity") != identity:
        theirs = st.get("identity", {}) if isinstance(st, dict) else {}
        diff = sorted(k for k in set(theirs) | set(identity) if theirs.get(k) != identity.get(k))
        if diff == ["config"]:
            diff = sorted(k for k in set(theirs["config"]) | set(identity["config"])
                          if theirs["config"].get(k) != identity["config"].get(k))
        raise CheckpointError(f"{path} holds the state of another training run (differs in {diff}); delete it to "
                              f"start afresh, or train with the same settings to resume")
    return st


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp)
    os.replace(tmp, path)


def _run_state(cfg, out, **digests) -> tuple[Path, dict]:
    """``(state path, identity)`` of the resumable training ``cfg`` writing ``out``: ``<out>.state.pt``, and
    the configuration (less :data:`RESUMABLE_CHANGES`) with ``digests`` (e.g. the classifier's SHA-256).

    Raises:
        CheckpointError: the state file holds another run's state (refused before anything is computed).
    """
    out = Path(out)
    state_path = out.with_name(out.name + ".state.pt")
    identity = {"config": {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES}, **digests}
    _resume_state(state_path, identity)
    return state_path, identity


class _Progress:
    """The state a resumable interpreter training carries across epochs and sessions: Adam, the
    shuffling generator, the per-epoch history, the best epoch's weights and the elapsed time, read back
    from ``state_path`` when it holds this run's state (:func:`_resume_state`) and saved there after
    every epoch (atomically)."""

    def __init__(self, net: nn.Module, lr: float, weight_decay: float, seed: int, state_path, identity):
        self.gen = torch.Generator().manual_seed(seed)
        self.opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        self.identity = dict(identity or {})
        self.history, self.best_val, self.best_state, self.elapsed, self.start, self.sessions = \
            [], math.inf, None, 0.0, 0, 1
        self.path = None if state_path is None else Path(state_path)
        st = _resume_state(self.path, self.identity)
        if st is not None:
            net.load_state_dict(st["net"])
            self.opt.load_state_dict(st["opt"])
            self.gen.set_state(st["gen"])
            self.history, self.best_val, self.best_state = st["history"], st["best_val"], st["best_state"]
            self.elapsed, self.start, self.sessions = st["elapsed"], st["epoch"], st["sessions"] + 1

    def end_epoch(self, net: nn.Module, epoch: int, sums: dict, n: int, val_terms: dict, seconds: float) -> dict:
        """Log an epoch (train sums over ``n`` items, validation means, its seconds), keep the weights if
        its validation loss is the lowest so far, save the state; returns the history row."""
        self.elapsed += seconds
        row = {"epoch": epoch, **{f"train_{k}": v / n for k, v in sums.items()},
               **{f"val_{k}": v for k, v in val_terms.items()}, "minutes": self.elapsed / 60}
        self.history.append(row)
        if row["val_total"] < self.best_val:
            self.best_val, self.best_state = row["val_total"], copy.deepcopy(net.state_dict())
        if self.path is not None:
            _save_state(self.path, {"identity": self.identity, "epoch": epoch, "net": net.state_dict(),
                                    "opt": self.opt.state_dict(), "gen": self.gen.get_state(),
                                    "history": self.history, "best_val": self.best_val,
                                    "best_state": self.best_state, "elapsed": self.elapsed,
                                    "sessions": self.sessions})
        return row

    def finish(self, net: nn.Module, epochs: int, max_minutes: float, patience: int | None) -> dict:
        """Load the best epoch's weights into ``net`` (eval mode) and return the training summary.

        Raises:
            ConfigError: no epoch was trained.
        """
        if self.best_state is None:
            raise ConfigError(f"no {net.kind} epoch was trained (epochs={epochs}, max_minutes={max_minutes})")
        net.load_state_dict(self.best_state)
        net.eval()
        hist = self.history
        best_row = min(hist, key=lambda r: r["val_total"])
        return {"history": hist, "best_epoch": best_row["epoch"], "best_val": best_row, "epochs_run": len(hist),
                "minutes": self.elapsed / 60, "seconds_per_epoch": self.elapsed / len(hist),
                "sessions": self.sessions, "stopped": stop_reason(hist, epochs, max_minutes, patience) or "epochs"}


def fit_interpreter(net: nn.Module, train: InterpreterData, val: InterpreterData, epochs: int, batch_size: int,
                    lr: float, seed: int = 0, weight_decay: float = 0.0, max_minutes: float = math.inf,
                    progress: bool = False, on_epoch=None, patience: int | None = None, state_path=None,
                    identity: dict | None = None) -> dict:
    """Train ``net`` on cached data with Adam; keep the state of the epoch with the lowest
    validation loss (the returned net holds it).

    Only the interpreter's parameters are optimised (the classifier is not involved: its hidden
    maps and logits are cached tensors).

    Args:
        epochs: maximum epochs; max_minutes: stop after the epoch that passes this wall time (summed over
            resumed sessions); patience: stop once the validation loss has not fallen for this many epochs
            (None: no early stopping) — :func:`stop_reason`.
        state_path: where the whole training state is written after every epoch (None: not resumable). If
            it exists, training resumes from it (weights, optimiser, generator, history, best epoch), so an
            interrupted and resumed run gives the uninterrupted run's result.
        identity: what the saved state must match to be resumed; a state of another run is refused.

    Returns:
        ``{"history": [per-epoch train/val losses], "best_epoch", "best_val", "epochs_run",
        "minutes", "seconds_per_epoch", "sessions", "stopped"}`` (``stopped``: why it ended,
        :func:`stop_reason`).

    Raises:
        CheckpointError: ``state_path`` holds another run's state or cannot be read (named).
        ConfigError: no epoch was trained (``epochs`` or ``max_minutes`` already spent).
    """
    from tqdm.auto import tqdm

    net.to(train.hidden.device)
    run = _Progress(net, lr, weight_decay, seed, state_path, identity)
    for epoch in tqdm(range(run.start + 1, epochs + 1), desc=f"train {net.kind}", disable=not progress,
                      initial=run.start, total=epochs):
        if stop_reason(run.history, epochs, max_minutes, patience):
            break
        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(len(train), generator=run.gen)
        sums, n = {}, 0
        for s in range(0, len(train), batch_size):
            idx = order[s:s + batch_size]
            _optimiser_step(run.opt, net.losses(train.hidden[idx], train.L[idx], train.logits[idx]), sums, len(idx))
            n += len(idx)
        val_terms = _evaluate(net, val, batch_size)
        row = run.end_epoch(net, epoch, sums, n, val_terms, time.perf_counter() - t0)
        if on_epoch is not None:
            on_epoch(row)
    return run.finish(net, epochs, max_minutes, patience)


def _frozen_classifier(cfg):
    """``(model, feature config, checkpoint dict)`` of ``cfg.checkpoint``, every weight frozen; sets
    torch's thread count to ``cfg.threads`` when given."""
    from ..models import load_classifier

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    model, extractor, ckpt = load_classifier(cfg.checkpoint, device=cfg.device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, extractor.cfg, ckpt


def train_interpreter(cfg: InterpreterTrainConfig, out, root=None, progress: bool = True) -> dict:
    """Train an L2I or PIQ interpreter on a frozen classifier and write its checkpoint to ``out``.

    Folds ``cfg.train_folds`` (1-3) train, ``cfg.val_folds`` (4) select the epoch with the lowest validation
    loss; with ``cfg.patience`` training stops once that loss has not fallen for so many epochs. The state
    is saved to ``<out>.state.pt`` after every epoch and a run with the same settings resumes from it
    (``epochs``, ``max_minutes`` and ``patience`` may change between sessions).

    ``kind="lmac"`` goes to :func:`train_lmac` (an :class:`InterpreterTrainConfig` is taken as an
    :class:`LMACTrainConfig` with the same fields).

    Returns:
        the fit summary of :func:`fit_interpreter` plus ``"path"`` and the data-caching minutes.

    Raises:
        ConfigError: bad configuration. CheckpointError: bad classifier or dictionary file.
        DatasetError: no ESC-50 root.
    """
    from ..models import model_name
    from ..nmf import NMFDictionary

    if cfg.kind == "lmac":
        if not isinstance(cfg, LMACTrainConfig):
            cfg = LMACTrainConfig(**asdict(cfg))
        return train_lmac(cfg, out, root, progress)
    cfg.validate()
    model, fcfg, ckpt = _frozen_classifier(cfg)
    W, nmf_info = None, None
    if cfg.kind == "l2i":
        nmf_path = cfg.nmf or str(Path(cfg.checkpoint).parent / f"nmf_{Path(cfg.checkpoint).stem}.pt")
        d = NMFDictionary.load(nmf_path)
        d.check(fcfg)
        W, nmf_info = d.W, {"path": Path(nmf_path).name, "sha256": file_sha256(nmf_path)}
    state_path, identity = _run_state(cfg, out, classifier_sha256=file_sha256(cfg.checkpoint),
                                      nmf_sha256=None if nmf_info is None else nmf_info["sha256"])
    t0 = time.perf_counter()
    train = interpreter_data(model, fcfg, root, cfg.train_folds, cfg.limit, progress=progress)
    val = interpreter_data(model, fcfg, root, cfg.val_folds, cfg.limit, progress=progress)
    cache_minutes = (time.perf_counter() - t0) / 60
    torch.manual_seed(cfg.seed)
    net = new_interpreter(cfg.kind, fcfg, train.hidden.shape[1:], train.logits.shape[1], W, **cfg.args)
    summary = fit_interpreter(net, train, val, cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed, cfg.weight_decay,
                              cfg.max_minutes, progress, patience=cfg.patience, state_path=state_path,
                              identity=identity)
    classifier = {"path": Path(cfg.checkpoint).name, "sha256": file_sha256(cfg.checkpoint), "name": model_name(ckpt),
                  "architecture": ckpt["architecture"], "arch_args": ckpt["arch_args"]}
    training = {"config": asdict(cfg), "git_commit": git_commit(), "cache_minutes": cache_minutes,
                "n_train": len(train), "n_val": len(val), **summary}
    path = save_interpreter(out, net, classifier, fcfg, training, metrics=summary["best_val"], nmf=nmf_info)
    return {**summary, "path": str(path), "cache_minutes": cache_minutes}


# ---------------------------------------------------------------------------------------------
# L-MAC


@dataclass
class LMACTrainConfig(InterpreterTrainConfig):
    """How :func:`train_lmac` trains L-MAC or L-MAC FT (the fields of :class:`InterpreterTrainConfig`, with
    L-MAC's defaults, plus the guided fine-tuning's).

    Attributes:
        kind: ``lmac``.
        batch_size, lr, weight_decay: Adam's settings (batch 16 and weight decay 2e-6 as SpeechBrain's
            ``lmac_cnn14.yaml``; lr 1e-3 rather than its 2e-4, for the few epochs a CPU hour allows).
        args: constructor overrides of :class:`~audiointerp.learned.lmac.LMACInterpreter` (``layers``,
            ``width``, the loss weights ``l_in``, ``l_out``, ``l1``, ``guide``, ...).
        guided: guided fine-tuning (L-MAC FT) on mixtures, starting from ``init``.
        init: the trained L-MAC checkpoint L-MAC FT starts from (same classifier: SHA-256 checked).
        mix_alpha: the clip's weight in L-MAC FT's mixtures with another training clip of a different
            class (:func:`audiointerp.noise.mix`; 0.6 ≈ 3.5 dB, the project's default level).
    """

    kind: str = "lmac"
    epochs: int = 30
    max_minutes: float = 55.0
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 2e-6
    guided: bool = False
    init: str | None = None
    mix_alpha: float = 0.6

    def validate(self) -> None:
        """Raise ConfigError naming a bad value (also those of :meth:`InterpreterTrainConfig.validate`)."""
        from ..noise import mixing_alpha

        super().validate()
        if self.kind != "lmac":
            raise ConfigError(f"LMACTrainConfig trains kind 'lmac', got {self.kind!r}")
        if self.guided and not self.init:
            raise ConfigError("guided fine-tuning (L-MAC FT) starts from a trained L-MAC: give init= (e.g. "
                              "weights/lmac_compact_mel.pt)")
        if self.init and not self.guided:
            raise ConfigError(f"init={self.init!r} is only used by guided fine-tuning (guided=True)")
        mixing_alpha(self.mix_alpha)


@dataclass
class LMACData:
    """What L-MAC training reads for one split (float32 unless stated).

    Attributes:
        L: ``[n, n_fft//2+1, n_frames]`` log1p STFT of the decoder's input (the clean clips, or the fixed
            mixtures of a guided validation set).
        hidden: the frozen classifier's block outputs ``[[n, C_i, F_i, T_i]]`` of that input (None when not
            cached: guided training mixes afresh each epoch).
        logits: ``[n, n_classes]`` the classifier's logits of that input (None likewise).
        L_clean: ``[n, n_fft//2+1, n_frames]`` the clean clips' log1p STFT (guided sets only).
        wav: ``[n, n_samples]`` the clean clips (guided training only: mixed each epoch).
        labels: int64 ``[n]`` ESC-50 classes (partners of a mixture are of another class).
    """

    L: torch.Tensor
    hidden: list | None = None
    logits: torch.Tensor | None = None
    L_clean: torch.Tensor | None = None
    wav: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.L)


def lmac_data(model: nn.Module, cfg: FeatureConfig, root, folds, layers, limit: int | None = None,
              batch_size: int = 32, hidden: bool = True, waveforms: bool = False, progress: bool = False) -> LMACData:
    """Run the frozen classifier once over the clean clips of ``folds`` and cache L-MAC's input side.

    Args:
        layers: the block names the decoder reads (:class:`~audiointerp.learned.base.HiddenMaps`).
        limit: only the first ``limit`` clips.
        hidden: cache the block outputs and logits (plain L-MAC); False for guided training, whose
            decoder input is a fresh mixture at every epoch.
        waveforms: keep the clips (guided training mixes them).

    Features come from the feature cache (:func:`audiointerp.data.fold_features`); the waveforms are
    read once for the log1p STFTs.

    Raises:
        DatasetError: bad root or folds. ConfigError: a layer the model does not have.
    """
    from tqdm.auto import tqdm

    from ..data import ESC50, fold_features

    ds = ESC50(root, tuple(folds), cfg.sample_rate, cfg.duration)
    n = len(ds) if limit is None else min(int(limit), len(ds))
    feats = fold_features(ds, cfg, progress=progress)[:n] if hidden else None
    hm = HiddenMaps(model, layers)
    dev = next(iter(model.parameters())).device  # the cache lives on the model's device
    hs, logits, Ls, wavs = [], [], [], []
    with torch.no_grad():
        for s in tqdm(range(0, n, batch_size), desc=f"folds {tuple(folds)}", disable=not progress):
            idx = list(range(s, min(s + batch_size, n)))
            wav = ds.waveforms(idx).to(dev)
            Ls.append(log1p_stft(wav, cfg)[0])
            if waveforms:
                wavs.append(wav)
            if hidden:
                lg, h = hm(feats[idx].to(dev).contiguous(memory_format=torch.channels_last))
                hs.append(h)
                logits.append(lg)
    return LMACData(L=torch.cat(Ls), hidden=[torch.cat(z) for z in zip(*hs)] if hidden else None,
                    logits=torch.cat(logits) if hidden else None, wav=torch.cat(wavs) if waveforms else None,
                    labels=torch.tensor(ds.labels[:n]))


def _mixture_inputs(model: nn.Module, cfg: FeatureConfig, layers, mixtures: torch.Tensor):
    """``(L_mix, logits, hidden)`` of mixtures ``[b, n_samples]``: one STFT, the features of its magnitude
    (as :func:`audiointerp.processing.features` computes them) and the frozen classifier (no gradients)."""
    with torch.no_grad():
        L_mix, spec = log1p_stft(mixtures, cfg)
        x = magnitude_to_features(spec.abs(), cfg).contiguous(memory_format=torch.channels_last)
        logits, hidden = HiddenMaps(model, layers)(x)
    return L_mix, logits, hidden


def lmac_mixture_data(model: nn.Module, cfg: FeatureConfig, clean: LMACData, layers, seed: int = 0,
                      alpha: float = 0.6, batch_size: int = 32) -> LMACData:
    """A fixed, seeded set of L-MAC FT mixtures of ``clean``'s clips (guided validation: the same mixtures at
    every epoch, so epochs compare): each clip mixed with another clip of a different class of the set
    (:func:`~audiointerp.learned.lmac.mix_with_partners`, generator seeded with ``seed``), with the block
    outputs and logits of the mixtures and the clean clips' L as ``L_clean``.

    Raises:
        ConfigError: ``clean`` without waveforms or labels.
    """
    if clean.wav is None or clean.labels is None:
        raise ConfigError("L-MAC FT mixtures need the clips' waveforms and labels (lmac_data(..., waveforms=True))")
    mixtures, _ = mix_with_partners(clean.wav, clean.labels, torch.Generator().manual_seed(seed), alpha)
    Ls, logits, hs = [], [], []
    for s in range(0, len(mixtures), batch_size):
        L_mix, lg, h = _mixture_inputs(model, cfg, layers, mixtures[s:s + batch_size])
        Ls.append(L_mix)
        logits.append(lg)
        hs.append(h)
    return LMACData(L=torch.cat(Ls), hidden=[torch.cat(z) for z in zip(*hs)], logits=torch.cat(logits),
                    L_clean=clean.L, labels=clean.labels)


def _evaluate_lmac(net: LMACInterpreter, classify, data: LMACData, batch_size: int) -> dict:
    """Per-item means of L-MAC's loss terms over ``data`` (no gradients)."""
    sums, n = {}, 0
    net.eval()
    with torch.no_grad():
        for s in range(0, len(data), batch_size):
            sl = slice(s, s + batch_size)
            terms = net.losses([h[sl] for h in data.hidden], data.L[sl], data.logits[sl], classify,
                               None if data.L_clean is None else data.L_clean[sl])
            b = len(data.L[sl])
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * b
            n += b
    return {k: v / n for k, v in sums.items()}


def fit_lmac(net: LMACInterpreter, model: nn.Module, cfg: FeatureConfig, train: LMACData, val: LMACData,
             epochs: int, batch_size: int, lr: float, seed: int = 0, weight_decay: float = 0.0,
             max_minutes: float = math.inf, guided: bool = False, mix_alpha: float = 0.6, state_path=None,
             identity: dict | None = None, progress: bool = False, on_epoch=None,
             patience: int | None = None) -> dict:
    """Train L-MAC's decoder against the frozen classifier; keep the epoch with the lowest validation loss.

    Only ``net``'s parameters are in the optimiser (Adam); the classifier runs in eval mode with
    ``requires_grad`` off for the call (restored afterwards), so gradients reach the decoder through the
    classifier's input only and its weights never change.

    Args:
        net: the decoder (:class:`~audiointerp.learned.lmac.LMACInterpreter`).
        model, cfg: the frozen classifier and its feature configuration.
        train, val: :func:`lmac_data` (plain: ``train.hidden`` cached) or, for ``guided``, ``train`` with
            ``wav`` and ``labels`` (mixed afresh every epoch) and ``val`` from :func:`lmac_mixture_data`.
        epochs: maximum epochs; max_minutes: stop after the epoch that passes this wall time (summed over
            resumed sessions); patience: stop once the validation loss has not fallen for this many epochs
            (None: no early stopping) — :func:`stop_reason`.
        guided: L-MAC FT (the guided term, on mixtures with partners drawn each epoch from the generator).
        state_path: where the whole training state is written after every epoch (None: not resumable). If
            it exists, training resumes from it: same decoder, optimiser, generator, history and best epoch,
            so an interrupted and resumed run gives the uninterrupted run's result.
        identity: what the saved state must match to be resumed (e.g. the configuration and the
            classifier's digest); a state of another run is refused.
        on_epoch: called with each epoch's history row (after the state is saved).

    Returns:
        ``{"history", "best_epoch", "best_val", "epochs_run", "minutes", "seconds_per_epoch", "sessions",
        "stopped"}``;
        ``net`` holds the best epoch's weights (eval mode).

    Raises:
        CheckpointError: ``state_path`` holds another run's state or cannot be read (named).
        ConfigError: guided training without waveforms and labels, or a validation set without cached
            block outputs.
    """
    from tqdm.auto import tqdm

    from ..noise import mix

    if guided and (train.wav is None or train.labels is None):
        raise ConfigError("guided L-MAC training needs the training clips' waveforms and labels")
    if val.hidden is None or val.logits is None:
        raise ConfigError("L-MAC validation needs the block outputs and logits of its clips (lmac_data / "
                          "lmac_mixture_data)")
    if not guided and train.hidden is None:
        raise ConfigError("plain L-MAC training needs the cached block outputs of its clips (lmac_data(hidden=True))")
    classify = magnitude_classifier(model, cfg)
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    net.to(next(iter(model.parameters())).device)
    run = _Progress(net, lr, weight_decay, seed, state_path, identity)
    HiddenMaps(model, net.layers)  # an unknown layer name fails here, before any epoch
    try:
        for epoch in tqdm(range(run.start + 1, epochs + 1), desc="train lmac" + (" ft" if guided else ""),
                          disable=not progress, initial=run.start, total=epochs):
            if stop_reason(run.history, epochs, max_minutes, patience):
                break
            t0 = time.perf_counter()
            net.train()
            order = torch.randperm(len(train), generator=run.gen)
            partners = draw_partners(train.labels, run.gen) if guided else None
            sums, n = {}, 0
            for s in range(0, len(train), batch_size):
                idx = order[s:s + batch_size]
                if guided:
                    mixtures = mix(train.wav[idx], train.wav[partners[idx]], alpha=mix_alpha)
                    L_in, logits, hidden = _mixture_inputs(model, cfg, net.layers, mixtures)
                    L_clean = train.L[idx]
                else:
                    hidden, L_in, logits = [h[idx] for h in train.hidden], train.L[idx], train.logits[idx]
                    L_clean = None
                _optimiser_step(run.opt, net.losses(hidden, L_in, logits, classify, L_clean), sums, len(idx))
                n += len(idx)
            val_terms = _evaluate_lmac(net, classify, val, batch_size)
            row = run.end_epoch(net, epoch, sums, n, val_terms, time.perf_counter() - t0)
            if on_epoch is not None:
                on_epoch(row)
    finally:
        model.train(was_training)
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return run.finish(net, epochs, max_minutes, patience)


def train_lmac(cfg: LMACTrainConfig, out, root=None, progress: bool = True) -> dict:
    """Train L-MAC (or, with ``cfg.guided``, L-MAC FT) on a frozen classifier and write its checkpoint.

    Folds ``cfg.train_folds`` (1-3) train, ``cfg.val_folds`` (4) select the epoch with the lowest
    validation loss (:func:`fit_lmac`; with ``cfg.patience``, training stops once that loss has not fallen for
    so many epochs). The state is saved to ``<out>.state.pt`` after every epoch and a run with the same
    settings resumes from it (``epochs``, ``max_minutes`` and ``patience`` may change between sessions;
    a finished run re-writes the same checkpoint without training). L-MAC FT starts from the L-MAC
    checkpoint ``cfg.init`` (trained for the same classifier: SHA-256 checked) and mixes each training clip
    with another training clip of a different class, partners drawn afresh each epoch from the seeded
    generator; its validation mixtures are fixed (seed ``cfg.seed``).

    Returns:
        the summary of :func:`fit_lmac` plus ``"path"`` and ``"cache_minutes"`` (the classifier's frozen
        forward over the clean clips and their STFTs, done once).

    Raises:
        ConfigError: bad configuration. CheckpointError: bad classifier or init checkpoint, an init of
        another classifier, or a state file of another run. DatasetError: no ESC-50 root.
    """
    from ..models import load_weights, model_name

    cfg.validate()
    model, fcfg, ckpt = _frozen_classifier(cfg)
    sha = file_sha256(cfg.checkpoint)
    init_ckpt, init_info = None, None
    args = dict(cfg.args)
    if cfg.guided:
        _, init_ckpt = load_interpreter(cfg.init, cfg.checkpoint, kind="lmac")
        args = {**init_ckpt["args"], **args}
        init_info = {"path": Path(cfg.init).name, "sha256": file_sha256(cfg.init)}
    layers = list(args.pop("layers", None) or default_lmac_layers(model))
    args.pop("hidden_shapes", None)
    args.pop("out_shape", None)
    state_path, identity = _run_state(cfg, out, classifier_sha256=sha,
                                      init_sha256=None if init_info is None else init_info["sha256"])
    t0 = time.perf_counter()
    train = lmac_data(model, fcfg, root, cfg.train_folds, layers, cfg.limit, hidden=not cfg.guided,
                      waveforms=cfg.guided, progress=progress)
    val = lmac_data(model, fcfg, root, cfg.val_folds, layers, cfg.limit, hidden=not cfg.guided,
                    waveforms=cfg.guided, progress=progress)
    if cfg.guided:
        val = lmac_mixture_data(model, fcfg, val, layers, cfg.seed, cfg.mix_alpha)
    cache_minutes = (time.perf_counter() - t0) / 60
    torch.manual_seed(cfg.seed)
    shapes = [h.shape[1:] for h in (val.hidden if cfg.guided else train.hidden)]
    net = new_interpreter("lmac", fcfg, shapes, 0, layers=layers, **args)
    if init_ckpt is not None:
        load_weights(net, init_ckpt["state_dict"],
                     f"init {cfg.init}: weights do not fit lmac({net.constructor_args()})")
    mixtures = (f"each training clip mixed with another training clip of a different class (audiointerp.noise.mix, "
                f"alpha {cfg.mix_alpha:g}), partners drawn each epoch from the generator seeded {cfg.seed}"
                if cfg.guided else None)
    summary = fit_lmac(net, model, fcfg, train, val, cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed, cfg.weight_decay,
                       cfg.max_minutes, cfg.guided, cfg.mix_alpha, state_path, identity, progress,
                       patience=cfg.patience)
    classifier = {"path": Path(cfg.checkpoint).name, "sha256": sha, "name": model_name(ckpt),
                  "architecture": ckpt["architecture"], "arch_args": ckpt["arch_args"]}
    training = {"config": asdict(cfg), "git_commit": git_commit(), "cache_minutes": cache_minutes,
                "n_train": len(train), "n_val": len(val), "guided": bool(cfg.guided), "init": init_info,
                "mixtures": mixtures, **summary}
    path = save_interpreter(out, net, classifier, fcfg, training, metrics=summary["best_val"])
    return {**summary, "path": str(path), "cache_minutes": cache_minutes}
