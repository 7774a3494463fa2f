"""Interpreter checkpoints (``audiointerp-interpreter/1``) and model cards.

A checkpoint carries the interpreter's kind and constructor arguments, its weights, the frozen
classifier's file SHA-256 and feature configuration, the NMF dictionary's digest (L2I), the
training configuration, per-epoch history, package versions and the git commit.
:func:`load_interpreter` refuses a checkpoint of another classifier, naming both.

Kinds: ``l2i``, ``piq`` and ``lmac``. L-MAC and its guided fine-tuning (L-MAC FT) share the kind
``lmac`` (same decoder); an FT checkpoint has ``training["guided"]`` true and names the L-MAC
checkpoint it started from (``training["init"]``); :func:`lmac_variant` tells them apart.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, ConfigError
from ..models import load_torch_file, load_weights
from ..processing import FeatureConfig
from ..provenance import file_sha256, package_versions
from .l2i import L2IInterpreter
from .lmac import LMACInterpreter
from .piq import PIQInterpreter

INTERPRETER_FORMAT = "audiointerp-interpreter/1"
INTERPRETERS = {"l2i": L2IInterpreter, "piq": PIQInterpreter, "lmac": LMACInterpreter}
KINDS = tuple(INTERPRETERS)


def interpreter_args(net: nn.Module) -> dict:
    """Constructor arguments of an interpreter (without L2I's dictionary, stored as a buffer)."""
    if isinstance(net, LMACInterpreter):
        return net.constructor_args()
    if isinstance(net, L2IInterpreter):
        return {"hidden_shape": list(net.hidden_shape), "n_frames": net.n_frames, "n_classes": net.n_classes,
                "width": net.psi_in[0].out_channels, "alpha": net.alpha, "beta": net.beta, "tau": net.tau}
    return {"hidden_shape": list(net.hidden_shape), "out_shape": list(net.out_shape), "n_classes": net.n_classes,
            "keys_per_class": net.keys_per_class, "dim": net.codebook.embedding_dim,
            "width": net.adapter[0].out_channels, "commitment": net.commitment, "threshold": net.threshold}


def build_interpreter(kind: str, args: dict, W: torch.Tensor | None = None) -> nn.Module:
    """Instantiate an interpreter of ``kind`` ('l2i' needs the dictionary ``W [F, K]``).

    Raises:
        ConfigError: unknown kind, or L2I without a dictionary.
    """
    if kind not in INTERPRETERS:
        raise ConfigError(f"unknown interpreter kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if kind == "l2i":
        if W is None:
            raise ConfigError("an L2I interpreter needs its NMF dictionary W")
        return L2IInterpreter(W, **args)
    return INTERPRETERS[kind](**args)


def save_interpreter(path, net: nn.Module, classifier: dict, features: FeatureConfig, training: dict | None = None,
                     metrics: dict | None = None, nmf: dict | None = None) -> Path:
    """Write a self-describing interpreter checkpoint (atomically).

    Args:
        classifier: ``{"path", "sha256", "name", "architecture", "arch_args"}`` of the frozen classifier.
        nmf: L2I only: ``{"path", "sha256"}`` of the dictionary file (the dictionary itself is in
            the state dict).
    """

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"format": INTERPRETER_FORMAT, "kind": net.kind, "args": interpreter_args(net),
            "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
            "classifier": dict(classifier), "features": features.to_dict(), "nmf": dict(nmf or {}),
            "training": dict(training or {}), "metrics": dict(metrics or {}), "versions": package_versions()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def read_interpreter(path) -> dict:
    """Load and validate an interpreter checkpoint dict.

    Raises:
        CheckpointError: missing or unreadable file, or not an audiointerp interpreter (named).
    """


    path = Path(path)
    ckpt = load_torch_file(path, "interpreter checkpoint")
    need = {"format", "kind", "args", "state_dict", "classifier", "features"}
    if not isinstance(ckpt, dict) or ckpt.get("format") != INTERPRETER_FORMAT or not need <= set(ckpt):
        raise CheckpointError(f"{path} is not an audiointerp interpreter checkpoint (format {INTERPRETER_FORMAT})")
    if ckpt["kind"] not in KINDS:
        raise CheckpointError(f"{path}: unknown interpreter kind {ckpt['kind']!r}")
    ckpt["path"] = str(path)
    return ckpt


def load_interpreter(path, classifier_checkpoint=None, kind: str | None = None):
    """Load an interpreter for a classifier.

    Args:
        path: file written by :func:`save_interpreter`.
        classifier_checkpoint: the classifier checkpoint it will explain; its SHA-256 must be
            the one the interpreter was trained on.
        kind: expected kind ('l2i', 'piq' or 'lmac'), checked when given.

    Returns:
        ``(net in eval mode, ckpt dict)``.

    Raises:
        CheckpointError: see :func:`read_interpreter`; another kind; weights that do not fit; a
            classifier other than the one it was trained for (both named).
    """


    ckpt = read_interpreter(path)
    if kind is not None and ckpt["kind"] != kind:
        raise CheckpointError(f"{path} holds a {ckpt['kind']} interpreter, not {kind}")
    if classifier_checkpoint is not None:
        sha = file_sha256(classifier_checkpoint)
        if sha != ckpt["classifier"].get("sha256"):
            raise CheckpointError(f"{path} was trained for classifier {ckpt['classifier'].get('name')} "
                                  f"(sha256 {str(ckpt['classifier'].get('sha256'))[:12]}), not "
                                  f"{classifier_checkpoint} (sha256 {sha[:12]}); train an interpreter for it")
    W = ckpt["state_dict"].get("W")
    try:
        net = build_interpreter(ckpt["kind"], ckpt["args"], W)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot build the interpreter: {exc}") from None
    load_weights(net, ckpt["state_dict"], f"{path}: weights do not fit {ckpt['kind']}({ckpt['args']})")
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval(), ckpt


def default_interpreter_path(classifier_checkpoint, kind: str) -> Path:
    """``<folder of the classifier>/<kind>_<classifier stem>.pt`` (e.g. ``weights/l2i_compact_mel.pt``)."""
    p = Path(classifier_checkpoint)
    return p.parent / f"{kind}_{p.stem}.pt"


def lmac_variant(ckpt: dict) -> str:
    """``"lmac_ft"`` for an L-MAC checkpoint trained with guided fine-tuning (``training["guided"]``),
    ``"lmac"`` for plain L-MAC.

    Raises:
        CheckpointError: the checkpoint is not of kind ``lmac`` (its path and kind named).
    """
    if ckpt.get("kind") != "lmac":
        raise CheckpointError(f"{ckpt.get('path', 'checkpoint')} holds a {ckpt.get('kind')} interpreter, not lmac")
    return "lmac_ft" if ckpt.get("training", {}).get("guided") else "lmac"


def _lmac_card(ckpt: dict) -> str:
    """The card of an L-MAC / L-MAC FT checkpoint (:func:`interpreter_card`)."""
    tr, m, a = ckpt.get("training", {}), ckpt.get("metrics", {}), ckpt["args"]
    c, f = ckpt["classifier"], FeatureConfig.from_dict(ckpt["features"])
    cfgd = tr.get("config", {})
    ft = bool(tr.get("guided"))
    blocks = ", ".join(f"`{n}` {tuple(s)}" for n, s in zip(a["layers"], a["hidden_shapes"]))
    lines = [f"# {'L-MAC FT' if ft else 'L-MAC'} interpreter for `{c.get('name')}`", "",
             "L-MAC (Listenable Maps for Audio Classifiers; Paissan, Ravanelli, Subakan, ICML 2024)"
             + (", with guided fine-tuning (L-MAC FT)" if ft else "") + ": a decoder on the frozen classifier's "
             "block outputs, fused by addition after transposed convolutions, gives a sigmoid mask M over "
             "L = log(1 + abs(STFT)). The listenable interpretation is ISTFT(expm1(M ⊙ L)) with the clip's "
             "phase.", "",
             "| | |", "|---|---|",
             f"| classifier | `{c.get('path')}` (sha256 {str(c.get('sha256'))[:12]}…) |",
             f"| blocks read (C, F', T') | {blocks} |",
             f"| STFT of the masks | {f.sample_rate} Hz, n_fft {f.n_fft}, hop {f.hop_length}: "
             f"{f.n_fft // 2 + 1} bins × {f.n_frames} frames of log(1 + abs(STFT)) |",
             f"| constructor | `{a}` |",
             f"| loss | {a['l_in']:g}·CE(f(x_in), c) − {a['l_out']:g}·CE(f(x_out), c) + {a['l1']:g}·mean abs(M), "
             f"c = the classifier's prediction |",
             f"| sparsity weight | {a['l1']:g} on the per-item mean: the reference sums 0.4·mean abs(M) over its "
             f"batch of 16 (0.4 × 16 = 6.4), so the balance no longer depends on the batch size |"]
    if ft:
        init = tr.get("init", {})
        lines += [f"| guided fine-tuning | from `{init.get('path')}` (sha256 {str(init.get('sha256'))[:12]}…) on "
                  f"{tr.get('mixtures', 'mixtures')}; items whose cosine similarity between M ⊙ L_mix and L_clean is "
                  f"≥ {a['corr_threshold']:g} get {a['guide']:g}·BCE(M, 1[L_clean ≥ {a['guide_threshold']:g}·max "
                  f"L_clean]) instead of the L1 term |"]
    lines += [f"| data | folds {cfgd.get('train_folds')} ({tr.get('n_train')} clips) for training, folds "
              f"{cfgd.get('val_folds')} ({tr.get('n_val')} clips) for validation"
              + (" (fixed seeded mixtures)" if ft else "") + "; fold 5 unseen |",
              f"| optimiser | Adam, lr {cfgd.get('lr')}, weight decay {cfgd.get('weight_decay')}, batch "
              f"{cfgd.get('batch_size')}, seed {cfgd.get('seed')}; the classifier frozen, not in the optimiser |",
              _epochs_row(tr, cfgd),
              _time_row(tr)]
    lines += _card_validation(tr, m)
    hist = tr.get("history", [])
    if hist:
        extra = " | val guided" if ft else ""
        lines += ["", "Per-epoch history (total loss; validation cross-entropies in / out, mean mask"
                  + (", fraction of guided items" if ft else "") + "):", "",
                  f"| epoch | train | val | val in | val out | val mean M{extra} |",
                  "|---|---|---|---|---|---|" + ("---|" if ft else "")]
        lines += [f"| {h['epoch']} | {h['train_total']:.4f} | {h['val_total']:.4f} | {h['val_in']:.4f} | "
                  f"{h['val_out']:.4f} | {h['val_l1']:.4f}" + (f" | {h['val_guided']:.2f}" if ft else "") + " |"
                  for h in hist]
    return "\n".join(lines) + "\n"


_STOPPED = {"patience": "stopped because the validation loss had not fallen for {patience} epochs",
            "max_minutes": "stopped by the time budget", "epochs": "stopped at the maximum epochs"}


def _epochs_row(tr: dict, cfgd: dict) -> str:
    """The card's ``epochs`` row: epochs run, the limits (maximum, time budget, early-stopping patience), why
    training stopped (``training["stopped"]``, older checkpoints: not recorded) and the kept epoch."""
    limits = f"max {cfgd.get('epochs')}, budget {cfgd.get('max_minutes')} min"
    if cfgd.get("patience"):
        limits += f", patience {cfgd['patience']}"
    why = _STOPPED.get(tr.get("stopped"), "")
    why = why.format(patience=cfgd.get("patience")) + "; " if why else ""
    return (f"| epochs | {tr.get('epochs_run')} run ({limits}); {why}checkpoint = epoch {tr.get('best_epoch')}, "
            f"the lowest validation loss |")


def _time_row(tr: dict) -> str:
    """The card's ``time`` row: training and caching minutes, and (runs that record them) seconds per epoch
    and the sessions of a resumed run."""
    per_epoch = (f" ({tr['seconds_per_epoch']:.0f} s per epoch, {tr.get('sessions', 1)} session(s): resumable from "
                 f"`<out>.state.pt`)" if "seconds_per_epoch" in tr else "")
    return (f"| time | {tr.get('minutes', float('nan')):.1f} min training{per_epoch} + "
            f"{tr.get('cache_minutes', float('nan')):.1f} min caching on this machine |")


def _card_validation(tr: dict, m: dict) -> list:
    """The card lines every interpreter shares: the git commit row, then the fold-4 validation terms of the
    kept epoch (``m``: the checkpoint's metrics, ``val_*`` floats) as a Markdown table."""
    return ([f"| git commit | {tr.get('git_commit')} |", "", "Validation (fold 4) at the kept epoch:", "",
             "| term | value |", "|---|---|"]
            + [f"| {k} | {v:.4f} |" for k, v in m.items() if k.startswith("val_")])


def interpreter_card(ckpt: dict) -> str:
    """A Markdown model card for an interpreter checkpoint (what, for which classifier, how trained);
    L-MAC's card also states its loss weights, blocks, guided fine-tuning and training sessions."""
    if ckpt["kind"] == "lmac":
        return _lmac_card(ckpt)
    tr, m = ckpt.get("training", {}), ckpt.get("metrics", {})
    c, f = ckpt["classifier"], FeatureConfig.from_dict(ckpt["features"])
    title = {"l2i": "L2I (Listen to Interpret; Parekh et al., NeurIPS 2022)",
             "piq": "PIQ (Posthoc Interpretation via Quantization; Paissan et al., 2023)"}[ckpt["kind"]]
    lines = [f"# {ckpt['kind'].upper()} interpreter for `{c.get('name')}`", "", title + ",",
             "trained on the frozen classifier's last convolutional feature map (`cam_layer`).", "",
             "| | |", "|---|---|",
             f"| classifier | `{c.get('path')}` (sha256 {str(c.get('sha256'))[:12]}…) |",
             f"| STFT of the masks | {f.sample_rate} Hz, n_fft {f.n_fft}, hop {f.hop_length}: "
             f"{f.n_fft // 2 + 1} bins × {f.n_frames} frames of log(1 + abs(STFT)) |",
             f"| constructor | `{ckpt['args']}` |"]
    if ckpt.get("nmf"):
        lines.append(f"| NMF dictionary | `{ckpt['nmf'].get('path')}` (sha256 {str(ckpt['nmf'].get('sha256'))[:12]}…) |")
    cfgd = tr.get("config", {})
    lines += [f"| data | folds {cfgd.get('train_folds')} ({tr.get('n_train')} clips) for training, folds "
              f"{cfgd.get('val_folds')} ({tr.get('n_val')} clips) for validation; fold 5 unseen |",
              f"| optimiser | Adam, lr {cfgd.get('lr')}, batch {cfgd.get('batch_size')}, seed {cfgd.get('seed')} |",
              _epochs_row(tr, cfgd),
              _time_row(tr)]
    lines += _card_validation(tr, m)
    hist = tr.get("history", [])
    if hist:
        lines += ["", "Per-epoch history (train / validation total loss):", "", "| epoch | train | val |",
                  "|---|---|---|"]
        lines += [f"| {h['epoch']} | {h['train_total']:.4f} | {h['val_total']:.4f} |" for h in hist]
    return "\n".join(lines) + "\n"
