"""Learned interpreters: L2I and PIQ, trained on a frozen classifier's hidden feature map.

Both read the classifier's last convolutional feature map ``model.cam_layer`` (captured with a
forward hook, :class:`HiddenMap`), ``[batch, channels, F', T']``, and produce a mask over the
clip's log1p-magnitude STFT ``L = log(1 + |STFT|)`` ``[batch, n_fft//2+1, n_frames]`` at the
classifier's own STFT. The interpretation is listenable: ``ISTFT(expm1(M ⊙ L) · e^{iφ})`` with
the clip's own phase φ (:func:`masked_magnitude`).

* **L2I** (Parekh et al., "Listen to Interpret: Post-hoc Interpretability for Audio Networks
  with NMF", NeurIPS 2022; SpeechBrain's ESC-50 recipe). A fixed NMF dictionary
  ``W [F, K]`` (:mod:`audiointerp.nmf`); an interpreter network ψ maps the hidden map to
  non-negative activations ``H [K, n_frames]``; a surrogate classifier θ (mean over time, then
  linear to classes) mimics the classifier. Loss:
  ``α·MSE(W H, L) + β·mean|H| + CE(θ(H), softmax(f(x)/τ))`` (α = 10, β = 0.8, τ = 1).
  For class c, the relevance of component k is ``r_k = θ_{c,k} · mean_t H_k``;
  ``S = {k : r_k > 0.2 · max_k r_k}``; the native mask is the ratio mask
  ``M = W_S H_S / (W H + ε)`` in [0, 1].
* **PIQ** (Paissan, Subakan, Ravanelli, "Posthoc Interpretation via Quantization", 2023;
  SpeechBrain's ESC-50 recipe). Adapter (1×1 conv) → strided conv (downsample) → vector
  quantiser whose codebook is partitioned by class (``keys_per_class`` keys each; an item
  is quantised with the keys of its predicted class only; straight-through gradients) →
  transposed-convolution decoder → sigmoid mask over L. Loss:
  ``BCE(mask, 1[L > 0.35 · max L]) + ||sg[z_e] − z_q||² + 0.25·||z_e − sg[z_q]||²``
  (van den Oord et al., "Neural Discrete Representation Learning", NeurIPS 2017).

Against the reference implementations' bugs: the classifier's softmax is applied once (to
its logits, as θ's target; θ's own logits go to ``cross_entropy``); the checkpoint kept is the
epoch with the lowest validation loss (fold 4), not the last; decoders reach the exact
number of STFT frames by explicit interpolation (:func:`match_size`: no frame dropped or
padded silently); the classifier is frozen and never in the optimiser.

Checkpoints (``audiointerp-interpreter/1``) carry the interpreter's constructor arguments,
the classifier's file SHA-256 and feature configuration, the NMF dictionary (L2I), the
training configuration and per-epoch history; :func:`load_interpreter` refuses a checkpoint
of another classifier.
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
import torch.nn.functional as F

from .errors import CheckpointError, ConfigError
from .processing import FeatureConfig, _magnitude_to_audio, mel_filterbank, power_to_db, stft, to_feature_power
from .provenance import file_sha256, git_commit, package_versions

INTERPRETER_FORMAT = "audiointerp-interpreter/1"
KINDS = ("l2i", "piq")


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------

def log1p_spectrogram(wav: torch.Tensor, cfg: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``L = log(1 + |STFT|)`` and the complex STFT of ``[batch, n_samples]`` at ``cfg``'s STFT.

    Returns:
        ``(L float32 [batch, n_fft//2+1, n_frames], spec complex64 [batch, n_fft//2+1, n_frames])``.
    """
    if wav.dim() != 2:
        raise ConfigError(f"waveforms must be [batch, n_samples], got shape {tuple(wav.shape)}")
    spec = stft(wav, cfg)
    return torch.log1p(spec.abs()), spec


def masked_magnitude(L: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The interpretation's magnitude ``expm1(mask ⊙ L)`` (L2I / PIQ's "M ⊙ X" on log1p STFTs).

    Args:
        L: log1p magnitudes ``[..., F, T]``; mask: values in [0, 1], broadcastable.

    Returns:
        linear magnitudes, same shape (0 where the mask is 0, ``|STFT|`` where it is 1).
    """
    return torch.expm1(mask * L)


def magnitude_features(magnitude: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """The classifier's features (dB) of STFT magnitudes ``[batch, n_fft//2+1, n_frames]``:
    ``10·log10(|·|²)`` for ``stft``, through the mel filterbank first for ``mel``.

    Returns:
        float32 ``[batch, 1, n_freq, n_frames]`` in dB (floor -100 dB), as
        :func:`audiointerp.processing.features` computes them from audio.
    """
    return power_to_db(to_feature_power(magnitude.pow(2), cfg))[:, None]


def masked_audio(spec: torch.Tensor, mask: torch.Tensor, cfg: FeatureConfig, length: int) -> torch.Tensor:
    """Listenable interpretation: ISTFT of ``expm1(mask ⊙ log1p|spec|)`` with the clip's phase.

    Args:
        spec: complex STFT ``[batch, F, T]``; mask ``[batch, F, T]`` in [0, 1].
        length: output samples (the clip length; nothing is dropped or padded).

    Returns:
        float32 ``[batch, length]``.
    """
    return _magnitude_to_audio(masked_magnitude(torch.log1p(spec.abs()), mask), torch.angle(spec), length, cfg,
                               n_iter=0)


def match_size(y: torch.Tensor, size: tuple[int, ...], max_ratio: float = 8.0) -> torch.Tensor:
    """Resample a decoder output ``[batch, channels, *spatial]`` to exactly ``size`` by linear /
    bilinear interpolation (``align_corners=False``), so every STFT frame gets a value and none
    is dropped or zero-padded.

    Raises:
        ConfigError: ``size`` more than ``max_ratio`` times larger or smaller than the input in
            any axis (a wiring error, not a rounding difference).
    """
    size = tuple(int(s) for s in size)
    have = tuple(y.shape[2:])
    if len(size) != len(have):
        raise ConfigError(f"cannot resize {len(have)}-d output {have} to {size}")
    for h, s in zip(have, size):
        if not (s / max_ratio <= h <= s * max_ratio):
            raise ConfigError(f"decoder output {have} is too far from the target size {size}")
    if have == size:
        return y
    mode = "linear" if len(size) == 1 else "bilinear"
    return F.interpolate(y, size=size, mode=mode, align_corners=False)


def to_feature_grid(a_lin: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """Carry a map over linear STFT bins ``[batch, 1, n_fft//2+1, T]`` to the classifier's
    feature grid ``[batch, 1, n_freq, T]``: identity for ``stft``; for ``mel``, the mean over each
    mel band's bins weighted by the band's filter (filterbank columns normalised to sum to 1)."""
    if cfg.kind == "stft":
        return a_lin
    fb = mel_filterbank(cfg).to(a_lin.device)
    w = fb / fb.sum(0, keepdim=True).clamp_min(1e-12)  # [F_lin, n_mels]
    return torch.einsum("bcft,fm->bcmt", a_lin, w)


def energy_target(L: torch.Tensor, threshold: float = 0.35) -> torch.Tensor:
    """PIQ's training target ``1[L > threshold · max L]`` (max per clip) of ``[batch, F, T]``, float32."""
    peak = L.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return (L > threshold * peak).float()


class HiddenMap:
    """Run a classifier and capture the output of one layer (default ``model.cam_layer``).

    ``hm(x) -> (logits [batch, n_classes], hidden [batch, channels, F', T'])`` for features
    ``x [batch, 1, n_freq, n_frames]`` (dB). The hook is registered for the call only.

    Raises:
        ConfigError: the model has no ``cam_layer`` and no layer is given.
    """

    def __init__(self, model: nn.Module, layer: nn.Module | None = None):
        layer = layer if layer is not None else getattr(model, "cam_layer", None)
        if layer is None:
            raise ConfigError(f"{type(model).__name__} has no cam_layer: pass the hidden layer as layer=")
        self.model, self.layer = model, layer

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        store = {}
        handle = self.layer.register_forward_hook(lambda mod, inp, out: store.__setitem__("h", out))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        return logits, store["h"].contiguous()


# --------------------------------------------------------------------------------------------
# Interpreter networks
# --------------------------------------------------------------------------------------------

class L2IInterpreter(nn.Module):
    """L2I's interpreter ψ and surrogate classifier θ over a fixed NMF dictionary.

    Args:
        W: NMF dictionary float32 ``[n_fft//2+1, K]`` (fixed: a buffer, not a parameter).
        hidden_shape: the classifier's hidden map ``(channels, F', T')``.
        n_frames: STFT frames of a clip (the activations' length).
        n_classes: classifier outputs.
        width: ψ's channels.
        alpha, beta, tau: loss weights (reconstruction, L1 sparsity) and the temperature of the
            classifier's softmax in the fidelity term.

    ``activations(hidden) -> H [batch, K, n_frames]`` (>= 0); ``surrogate(H) -> logits``.
    """

    kind = "l2i"

    def __init__(self, W: torch.Tensor, hidden_shape, n_frames: int, n_classes: int, width: int = 256,
                 alpha: float = 10.0, beta: float = 0.8, tau: float = 1.0):
        super().__init__()
        W = torch.as_tensor(W, dtype=torch.float32)
        if W.dim() != 2 or (W < 0).any():
            raise ConfigError(f"the NMF dictionary must be non-negative [F, K], got shape {tuple(W.shape)}")
        self.register_buffer("W", W.clone())
        c, f, t = (int(v) for v in hidden_shape)
        self.hidden_shape, self.n_frames, self.n_classes = (c, f, t), int(n_frames), int(n_classes)
        self.alpha, self.beta, self.tau = float(alpha), float(beta), float(tau)
        k = W.shape[1]
        self.psi_in = nn.Sequential(nn.Conv1d(c * f, width, 3, padding=1), nn.ReLU(),
                                    nn.Conv1d(width, width, 3, padding=1), nn.ReLU())
        self.psi_out = nn.Sequential(nn.Conv1d(width, width, 5, padding=2), nn.ReLU(), nn.Conv1d(width, k, 1))
        self.theta = nn.Linear(k, n_classes)

    @property
    def n_components(self) -> int:
        return int(self.W.shape[1])

    def activations(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[batch, C, F', T'] -> H [batch, K, n_frames]`` (ReLU, non-negative)."""
        z = self.psi_in(hidden.flatten(1, 2))
        z = match_size(z, (self.n_frames,), max_ratio=64)
        return F.relu(self.psi_out(z))

    def surrogate(self, H: torch.Tensor) -> torch.Tensor:
        """θ: mean over time, then linear: ``[batch, K, T] -> logits [batch, n_classes]``."""
        return self.theta(H.mean(-1))

    def reconstruct(self, H: torch.Tensor) -> torch.Tensor:
        """``W H``: ``[batch, K, T] -> [batch, n_fft//2+1, T]``."""
        return torch.matmul(self.W, H)

    def losses(self, hidden: torch.Tensor, L: torch.Tensor, logits: torch.Tensor) -> dict:
        """The loss terms for a batch (the classifier's ``logits`` are detached targets).

        Returns:
            ``{"total", "reconstruction", "sparsity", "fidelity"}`` scalar tensors, where
            total = α·reconstruction + β·sparsity + fidelity and fidelity =
            CE(θ(H), softmax(logits/τ)) (one softmax on the classifier side).
        """
        H = self.activations(hidden)
        rec = F.mse_loss(self.reconstruct(H), L)
        sparse = H.abs().mean()
        fid = F.cross_entropy(self.surrogate(H), torch.softmax(logits.detach() / self.tau, dim=1))
        return {"total": self.alpha * rec + self.beta * sparse + fid, "reconstruction": rec, "sparsity": sparse,
                "fidelity": fid}

    def relevance(self, H: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``r_k = θ_{c,k} · mean_t H_k`` for class ``target`` ``[batch]``: ``[batch, K]``."""
        return self.theta.weight[target] * H.mean(-1)

    def selected(self, r: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
        """``S = {k : r_k > threshold · max r}`` as a float ``[batch, K]`` 0/1; when no component
        has positive relevance, the single most relevant one (never an empty set)."""
        top = r.amax(1, keepdim=True)
        s = (r > threshold * top) & (top > 0)
        s |= (top <= 0) & (r == top)
        return s.float()

    def component_masks(self, H: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """Per-component ratio masks ``W_k H_k / (W H + ε)``: ``[batch, K, F, T]``, each in [0, 1],
        summing over k to ``W H / (W H + ε) <= 1``."""
        parts = self.W.T[None, :, :, None] * H[:, :, None, :]
        return parts / (parts.sum(1, keepdim=True) + eps)

    def ratio_mask(self, H: torch.Tensor, S: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """L2I's mask ``W_S H_S / (W H + ε)``: ``[batch, F, T]`` in [0, 1]."""
        return self.reconstruct(H * S[:, :, None]) / (self.reconstruct(H) + eps)

    def explain(self, hidden: torch.Tensor, target: torch.Tensor, threshold: float = 0.2,
                eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask [batch, F, T] in [0, 1], map [batch, F, T] in [-1, 1])``.

        The map is the relevance-weighted ratio ``Σ_k r̂_k W_k H_k / (W H + ε)`` with
        ``r̂ = r / max|r|``: positive where components that vote for the class dominate.
        """
        H = self.activations(hidden)
        r = self.relevance(H, target)
        mask = self.ratio_mask(H, self.selected(r, threshold), eps)
        rn = r / r.abs().amax(1, keepdim=True).clamp_min(1e-12)
        amap = self.reconstruct(H * rn[:, :, None]) / (self.reconstruct(H) + eps)
        return mask, amap


class PIQInterpreter(nn.Module):
    """PIQ: adapter, downsampling, class-partitioned vector quantiser, transposed-conv decoder.

    Args:
        hidden_shape: the classifier's hidden map ``(channels, F', T')``.
        out_shape: ``(n_fft//2+1, n_frames)`` of the log1p STFT the mask covers.
        n_classes: classifier outputs; the codebook has ``n_classes · keys_per_class`` keys of
            size ``dim`` and class c owns keys ``[c·keys_per_class, (c+1)·keys_per_class)``.
        width: adapter / decoder channels.
        commitment: weight of the commitment loss (0.25, van den Oord et al. 2017).
        threshold: the target mask's level, a fraction of the clip's max L (0.35).
    """

    kind = "piq"

    def __init__(self, hidden_shape, out_shape, n_classes: int, keys_per_class: int = 8, dim: int = 64,
                 width: int = 64, commitment: float = 0.25, threshold: float = 0.35):
        super().__init__()
        c, f, t = (int(v) for v in hidden_shape)
        self.hidden_shape, self.out_shape = (c, f, t), tuple(int(v) for v in out_shape)
        self.n_classes, self.keys_per_class = int(n_classes), int(keys_per_class)
        self.commitment, self.threshold = float(commitment), float(threshold)
        self.adapter = nn.Sequential(nn.Conv2d(c, width, 1), nn.ReLU(),
                                     nn.Conv2d(width, dim, 3, stride=2, padding=1))
        self.codebook = nn.Embedding(self.n_classes * self.keys_per_class, dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / self.keys_per_class, 1.0 / self.keys_per_class)
        ups = []
        ch = dim
        for out_ch in (width, width, width // 2, width // 4):
            ups += [nn.ConvTranspose2d(ch, out_ch, 4, stride=2, padding=1), nn.ReLU()]
            ch = out_ch
        self.decoder = nn.Sequential(*ups, nn.Conv2d(ch, 1, 3, padding=1))

    def encode(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[batch, C, F', T'] -> z_e [batch, dim, ⌈F'/2⌉, ⌈T'/2⌉]``."""
        return self.adapter(hidden)

    def quantise(self, z_e: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest key of each position among the keys of class ``target[b]`` only.

        Returns:
            ``(z_q [batch, dim, f, t], index int64 [batch, f, t])`` with global key indices, all in
            ``[target·keys_per_class, (target+1)·keys_per_class)``.
        """
        b, d, f, t = z_e.shape
        keys = self.codebook.weight.view(self.n_classes, self.keys_per_class, d)[target]  # [b, kpc, d]
        flat = z_e.permute(0, 2, 3, 1).reshape(b, f * t, d)
        local = torch.cdist(flat, keys).argmin(-1)  # [b, f*t]
        z_q = torch.gather(keys, 1, local[..., None].expand(b, f * t, d))
        index = local + target[:, None] * self.keys_per_class
        return z_q.reshape(b, f, t, d).permute(0, 3, 1, 2), index.reshape(b, f, t)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z [batch, dim, f, t] -> mask logits [batch, n_fft//2+1, n_frames]``: four stride-2
        transposed convolutions (16x), then the one-channel logits are interpolated to the exact
        STFT size (:func:`match_size`)."""
        return match_size(self.decoder(z), self.out_shape, max_ratio=16)[:, 0]

    def forward(self, hidden: torch.Tensor, target: torch.Tensor) -> dict:
        """``{"logits", "z_e", "z_q", "index"}``; the decoder sees the straight-through z_q."""
        z_e = self.encode(hidden)
        z_q, index = self.quantise(z_e, target)
        z_st = z_e + (z_q - z_e).detach()
        return {"logits": self.decode(z_st), "z_e": z_e, "z_q": z_q, "index": index}

    def losses(self, hidden: torch.Tensor, L: torch.Tensor, logits: torch.Tensor) -> dict:
        """``{"total", "mask", "codebook", "commitment"}`` for a batch; the codebook partition used
        is the classifier's predicted class (argmax of its ``logits``)."""
        out = self(hidden, logits.detach().argmax(1))
        bce = F.binary_cross_entropy_with_logits(out["logits"], energy_target(L, self.threshold))
        cb = F.mse_loss(out["z_q"], out["z_e"].detach())
        commit = F.mse_loss(out["z_e"], out["z_q"].detach())
        return {"total": bce + cb + self.commitment * commit, "mask": bce, "codebook": cb, "commitment": commit}

    def explain(self, hidden: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask [batch, F, T] = sigmoid(logits) in [0, 1], map [batch, F, T] = the logits)``."""
        logits = self(hidden, target)["logits"]
        return torch.sigmoid(logits), logits


INTERPRETERS = {"l2i": L2IInterpreter, "piq": PIQInterpreter}


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def interpreter_args(net: nn.Module) -> dict:
    """Constructor arguments of an interpreter (without L2I's dictionary, stored as a buffer)."""
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
    return PIQInterpreter(**args)


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
    from .models import load_torch_file

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
        kind: expected kind ('l2i' or 'piq'), checked when given.

    Returns:
        ``(net in eval mode, ckpt dict)``.

    Raises:
        CheckpointError: see :func:`read_interpreter`; another kind; weights that do not fit; a
            classifier other than the one it was trained for (both named).
    """
    from .models import load_weights

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


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

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

    from .data import ESC50, fold_features

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
            Ls.append(log1p_spectrogram(ds.waveforms(idx), cfg)[0])
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
    from .models import load_classifier, model_name
    from .nmf import NMFDictionary

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


def interpreter_card(ckpt: dict) -> str:
    """A Markdown model card for an interpreter checkpoint (what, for which classifier, how trained)."""
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
              f"| epochs | {tr.get('epochs_run')} run (max {cfgd.get('epochs')}), checkpoint = epoch "
              f"{tr.get('best_epoch')}, the lowest validation loss |",
              f"| time | {tr.get('minutes', float('nan')):.1f} min training + {tr.get('cache_minutes', float('nan')):.1f}"
              f" min caching on this machine |",
              f"| git commit | {tr.get('git_commit')} |", "", "Validation (fold 4) at the kept epoch:", "",
              "| term | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in m.items() if k.startswith("val_")]
    hist = tr.get("history", [])
    if hist:
        lines += ["", "Per-epoch history (train / validation total loss):", "", "| epoch | train | val |",
                  "|---|---|---|"]
        lines += [f"| {h['epoch']} | {h['train_total']:.4f} | {h['val_total']:.4f} |" for h in hist]
    return "\n".join(lines) + "\n"
