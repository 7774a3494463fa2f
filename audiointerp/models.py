"""Classifiers of log-STFT / log-mel features and their self-describing checkpoints.

Every model takes features ``[batch, 1, n_freq, n_frames]`` (dB, frequency as rows) and
returns logits ``[batch, n_classes]``; ``model.cam_layer`` is the last convolutional block,
whose output ``[batch, channels, n_freq', n_frames']`` keeps the frequency-by-time
orientation (so Grad-CAM maps need no transposition).

* :class:`CompactCNN` -- four double-conv blocks, trains from scratch on a CPU.
* :class:`Cnn14` -- the PANNs CNN14 architecture (Kong et al., "PANNs: Large-Scale Pretrained
  Audio Neural Networks for Audio Pattern Recognition", IEEE/ACM TASLP 2020), written in our
  orientation; :func:`load_panns_cnn14` loads the 16 kHz AudioSet checkpoint when present.
"""

from __future__ import annotations

import copy
import os
import urllib.request
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import CheckpointError, ConfigError
from .processing import FeatureConfig, FeatureExtractor
from .provenance import git_commit, package_versions

CHECKPOINT_FORMAT = "audiointerp-classifier/1"
PANNS_CNN14_16K = "Cnn14_16k_mAP=0.438.pth"
PANNS_URL = "https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth?download=1"
PANNS_RECORD = "https://zenodo.org/record/3987831"


class ConvBlock(nn.Module):
    """Two 3x3 conv + BatchNorm + ReLU layers, then average pooling (PANNs' ConvBlock).

    ``[batch, c_in, F, T] -> [batch, c_out, F // pool[0], T // pool[1]]``.
    """

    def __init__(self, c_in: int, c_out: int, pool=(2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()
        self.pool = tuple(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, c_in, F, T] -> [batch, c_out, F // pool[0], T // pool[1]]``."""
        if not torch.is_grad_enabled():  # inference: in-place ReLU saves a pass over memory
            x = torch.relu_(self.bn1(self.conv1(x)))
            x = torch.relu_(self.bn2(self.conv2(x)))
        else:
            x = F.relu(self.bn1(self.conv1(x)))
            x = self.act(self.bn2(self.conv2(x)))
        if self.pool != (1, 1):
            x = F.avg_pool2d(x, self.pool)
        return x


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every :class:`ConvBlock`'s BatchNorm folded into
    its convolution (``torch.nn.utils.fusion.fuse_conv_bn_eval``).

    Same outputs up to float rounding (about 1e-6 relative) and about 1.5x faster on a CPU;
    for scoring forward passes only (the attribution methods use the original model). The
    original is left untouched.
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for block in fused.modules():
        if isinstance(block, ConvBlock):
            block.conv1 = fuse_conv_bn_eval(block.conv1, block.bn1)
            block.conv2 = fuse_conv_bn_eval(block.conv2, block.bn2)
            block.bn1, block.bn2 = nn.Identity(), nn.Identity()
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused


class FreqNorm(nn.Module):
    """BatchNorm over frequency bins (PANNs' ``bn0``): ``[batch, 1, F, T] -> same shape``."""

    def __init__(self, n_freq: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(n_freq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise each frequency row: ``[batch, 1, F, T] -> [batch, 1, F, T]``."""
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


def _pool_head(x: torch.Tensor) -> torch.Tensor:
    """``[batch, C, F, T] -> [batch, C]``: mean over frequency, then max + mean over time."""
    x = x.mean(dim=2)
    return x.amax(dim=2) + x.mean(dim=2)


class CompactCNN(nn.Module):
    """A compact CNN for ESC-50 that trains from scratch on a CPU.

    Frequency normalisation (PANNs' bn0), four :class:`ConvBlock` s, the last without pooling
    (its output is ``cam_layer``), PANNs' pooling head (mean over frequency, max + mean over
    time), dropout and a linear layer. About 0.3 M parameters with the default widths.

    Args:
        n_freq: feature rows (64 for the default mel, 257 for the default STFT).
        n_classes: output classes (50).
        channels: widths of the four blocks.
        first_pool: pooling (freq, time) after the first block; (4, 2) suits 257-bin STFTs.
        dropout: dropout before the classifier.

    Input ``[batch, 1, n_freq, n_frames]`` (dB); output logits ``[batch, n_classes]``.

    Raises:
        ConfigError: input with the wrong number of frequency rows (quotes both numbers).
    """

    def __init__(self, n_freq: int = 64, n_classes: int = 50, channels=(16, 32, 64, 128),
                 first_pool=(2, 2), dropout: float = 0.3):
        super().__init__()
        self.n_freq = int(n_freq)
        self.norm = FreqNorm(self.n_freq)
        pools = [tuple(first_pool), (2, 2), (2, 2), (1, 1)]
        c_in, blocks = 1, []
        for c, p in zip(channels, pools):
            blocks.append(ConvBlock(c_in, c, p))
            c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, n_classes)

    @property
    def cam_layer(self) -> nn.Module:
        """The last convolutional block (Grad-CAM's layer)."""
        return self.blocks[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, 1, n_freq, n_frames]`` dB features -> logits ``[batch, n_classes]``."""
        _check_input(x, self.n_freq)
        x = self.blocks(self.norm(x))
        return self.fc(self.dropout(_pool_head(x)))


class Cnn14(nn.Module):
    """PANNs CNN14 (six double-conv blocks 64..2048, fc 2048) on ``[batch, 1, n_mels, n_frames]``.

    The original works on ``[batch, 1, time, mel]``; this one keeps frequency as rows, and
    :func:`load_panns_cnn14` transposes the pretrained 3x3 kernels accordingly, so both compute
    the same function. Output: logits ``[batch, n_classes]`` (the original applies a sigmoid
    for AudioSet tagging; a classifier fine-tuned with cross-entropy uses logits).

    Source: Kong et al., PANNs, IEEE/ACM TASLP 2020 (github.com/qiuqiangkong/audioset_tagging_cnn).
    """

    def __init__(self, n_freq: int = 64, n_classes: int = 50, dropout: float = 0.2):
        super().__init__()
        self.n_freq = int(n_freq)
        self.bn0 = FreqNorm(self.n_freq)
        widths = [64, 128, 256, 512, 1024, 2048]
        pools = [(2, 2)] * 5 + [(1, 1)]
        c_in = 1
        for i, (w, p) in enumerate(zip(widths, pools), start=1):
            setattr(self, f"conv_block{i}", ConvBlock(c_in, w, p))
            c_in = w
        self.dropout = dropout
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, n_classes)

    @property
    def cam_layer(self) -> nn.Module:
        """The last convolutional block (Grad-CAM's layer)."""
        return self.conv_block6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, 1, n_freq, n_frames]`` dB features -> logits ``[batch, n_classes]``."""
        _check_input(x, self.n_freq)
        x = self.bn0(x)
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x)
            x = F.dropout(x, p=0.2, training=self.training)
        x = F.dropout(_pool_head(x), p=0.5, training=self.training)
        x = F.relu(self.fc1(x))
        return self.fc_audioset(F.dropout(x, p=0.5, training=self.training))


#: Architectures known by name; others are given as an import path (:func:`build_model`).
ARCHITECTURES = {"CompactCNN": CompactCNN, "Cnn14": Cnn14}


def register_architecture(name: str, cls: type | None = None):
    """Make a classifier class known by ``name`` (usable as a decorator).

    The class must honour the classifier contract (:func:`check_contract`). A checkpoint stores
    the name, so the class must be registered again (imported) before such a checkpoint is
    loaded in another process; an import path (``"package.module:Class"`` or
    ``"path/to/file.py:Class"``) needs no registration.

    Raises:
        ConfigError: ``name`` is already registered for another class.
    """
    def add(c):
        if name in ARCHITECTURES and ARCHITECTURES[name] is not c:
            raise ConfigError(f"architecture {name!r} is already registered for {ARCHITECTURES[name]!r}")
        ARCHITECTURES[name] = c
        return c
    return add if cls is None else add(cls)


def _check_input(x: torch.Tensor, n_freq: int) -> None:
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != n_freq:
        raise ConfigError(f"model expects features [batch, 1, {n_freq}, n_frames], got {tuple(x.shape)}")


def resolve_architecture(architecture: str) -> type:
    """The classifier class of a registered name or an import path.

    Args:
        architecture: a key of :data:`ARCHITECTURES`, ``"package.module:Class"`` (importable from
            ``sys.path``) or ``"path/to/file.py:Class"`` (a Python file, loaded by path).

    Raises:
        ConfigError: unknown name, a module or file that cannot be imported, or no such class in it
            (the path and the reason are quoted).
    """
    import hashlib
    import importlib
    import importlib.util
    import sys

    if architecture in ARCHITECTURES:
        return ARCHITECTURES[architecture]
    if ":" not in str(architecture):
        raise ConfigError(f"unknown architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)}, or an import "
                          f"path 'package.module:Class' / 'path/to/file.py:Class'")
    where, _, cls_name = str(architecture).rpartition(":")
    try:
        if where.endswith(".py"):
            file = Path(where).expanduser().resolve()
            if not file.is_file():
                raise FileNotFoundError(f"no such file {file}")
            mod_name = "audiointerp_user_" + hashlib.sha256(str(file).encode()).hexdigest()[:12]
            module = sys.modules.get(mod_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(mod_name, file)
                module = importlib.util.module_from_spec(spec)
                sys.modules[mod_name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(mod_name, None)
                    raise
        else:
            module = importlib.import_module(where)
    except Exception as exc:
        raise ConfigError(f"cannot import the architecture {architecture!r}: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, cls_name, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ConfigError(f"architecture {architecture!r}: {where} has no nn.Module class {cls_name!r}")
    return cls


def build_model(architecture: str, **kwargs) -> nn.Module:
    """Instantiate a classifier: a registered name (``CompactCNN``, ``Cnn14``) or an import path
    (:func:`resolve_architecture`), with constructor ``kwargs``.

    Bring your own classifier: any ``nn.Module`` whose constructor accepts ``n_freq`` and
    ``n_classes`` (filled in by training) and that honours :func:`check_contract` trains,
    is explained, scored and tabulated with no change to audiointerp; its checkpoint stores the
    name or import path and the constructor arguments.

    Raises:
        ConfigError: unknown or unimportable architecture; constructor arguments it does not take.
    """
    cls = resolve_architecture(architecture)
    try:
        model = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"architecture {architecture!r} cannot be built with {kwargs}: {exc}") from None
    model._audiointerp_architecture = architecture  # what save_checkpoint records
    return model


def architecture_name(model: nn.Module) -> str:
    """What a checkpoint records to rebuild ``model``: the name or import path it was built from,
    a registered name of its class, or ``"module:Class"``."""
    given = getattr(model, "_audiointerp_architecture", None)
    if given:
        return given
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    return f"{type(model).__module__}:{type(model).__qualname__}"


def check_contract(model: nn.Module, n_freq: int, n_frames: int, n_classes: int, need_cam_layer: bool = True) -> None:
    """Check that a classifier honours audiointerp's contract, with one clear error if not.

    The contract: ``model(x)`` maps features ``[batch, 1, n_freq, n_frames]`` (float32, dB) to
    logits ``[batch, n_classes]``, and ``model.cam_layer`` is the module whose output
    ``[batch, channels, F', T']`` (frequency as rows) Grad-CAM and the learned interpreters read.

    Raises:
        ConfigError: the forward pass fails, returns another shape, or (``need_cam_layer``) there is
            no ``cam_layer`` module or its output is not 4-D (the shapes are quoted).
    """
    name = architecture_name(model)
    x = torch.zeros(2, 1, int(n_freq), int(n_frames)) - 50.0
    store = {}
    layer = getattr(model, "cam_layer", None)
    if need_cam_layer and not isinstance(layer, nn.Module):
        raise ConfigError(f"classifier {name} has no cam_layer module: the contract asks for the layer Grad-CAM and "
                          f"the learned interpreters read (a property returning e.g. the last conv block)")
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("h", o)) if isinstance(
        layer, nn.Module) else None
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(next(iter(model.parameters()), x).device))
    except Exception as exc:
        raise ConfigError(f"classifier {name} fails on features [2, 1, {n_freq}, {n_frames}]: "
                          f"{type(exc).__name__}: {exc}") from None
    finally:
        if handle is not None:
            handle.remove()
        model.train(was)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, int(n_classes)):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"classifier {name} returns {got} for features [2, 1, {n_freq}, {n_frames}]; the contract "
                          f"is logits [batch, n_classes] = [2, {n_classes}]")
    if need_cam_layer:
        h = store.get("h")
        if not isinstance(h, torch.Tensor) or h.dim() != 4:
            got = tuple(h.shape) if isinstance(h, torch.Tensor) else "nothing"
            raise ConfigError(f"classifier {name}: cam_layer gives {got}; the contract is a map "
                              f"[batch, channels, F', T'] used by the forward pass")


#: md5 published by Zenodo (record 3987831) for ``Cnn14_16k_mAP=0.438.pth``.
PANNS_CNN14_16K_MD5 = "362fc5ff18f1d6ad2f6d464b45893f2c"


def _md5(path: Path) -> str:
    import hashlib

    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_panns_cnn14(dest: str | os.PathLike = "pretrained", url: str = PANNS_URL,
                         md5: str | None = PANNS_CNN14_16K_MD5) -> Path:
    """Download PANNs' 16 kHz CNN14 AudioSet checkpoint (Zenodo record 3987831) to ``dest`` and
    check its digest.

    Args:
        dest: folder (the file is ``dest/Cnn14_16k_mAP=0.438.pth``; kept if already present).
        url: where to download from (any urllib URL; tests use ``file://``).
        md5: the expected md5 (Zenodo's published checksum); None skips the check.

    Returns:
        the file path.

    Raises:
        CheckpointError: the download fails (nothing is left behind), or the file's md5 differs
            (a truncated or other file: it is removed if it was just downloaded; a file already
            present with another digest is named and left for the user to delete).
    """
    path = Path(dest) / PANNS_CNN14_16K
    if path.is_file():
        if md5 is not None and _md5(path) != md5:
            raise CheckpointError(f"{path} has md5 {_md5(path)}, not Zenodo's {md5}: it is truncated or another file; "
                                  f"delete it and download again from {PANNS_RECORD}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    try:
        urllib.request.urlretrieve(url, tmp)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not download the PANNs checkpoint from {url}: {exc}; "
                              f"get it by hand from {PANNS_RECORD} into {path}") from None
    if md5 is not None:
        got = _md5(tmp)
        if got != md5:
            tmp.unlink(missing_ok=True)
            raise CheckpointError(f"the file downloaded from {url} has md5 {got}, not Zenodo's {md5} (truncated or "
                                  f"another file); nothing was kept: try again, or get it by hand from {PANNS_RECORD}")
    os.replace(tmp, path)
    return path


def load_panns_cnn14(path: str | os.PathLike = Path("pretrained") / PANNS_CNN14_16K,
                     n_classes: int = 50, n_freq: int = 64) -> Cnn14:
    """CNN14 with the PANNs AudioSet weights (all but the output layer), ready to fine-tune.

    For the 64-mel front end (PANNs' own: 16 kHz, n_fft 512, hop 160, 50-8000 Hz) every weight but
    the output layer transfers. For another number of frequency rows (e.g. the 257-bin log-STFT)
    the convolution weights transfer and the frequency normalisation (``bn0``, one statistic per
    row) is re-initialised, as the prior art's STFT model did.

    Args:
        path: the ``Cnn14_16k_mAP=0.438.pth`` file.
        n_classes: size of the new output layer (randomly initialised).
        n_freq: frequency rows of the features (64: mel; 257: STFT).

    Returns:
        a :class:`Cnn14` whose conv kernels are transposed to frequency-as-rows.

    Raises:
        CheckpointError: the file is missing (the message gives the Zenodo record URL) or is
            not a PANNs CNN14 checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"PANNs checkpoint {path} not found: download {PANNS_CNN14_16K} from "
                              f"{PANNS_RECORD} ({PANNS_URL}) into {path.parent}/, or call "
                              f"audiointerp.models.download_panns_cnn14()")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read PANNs checkpoint {path}: {exc}") from None
    state = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(state, dict) or "conv_block1.conv1.weight" not in state:
        raise CheckpointError(f"{path} is not a PANNs CNN14 checkpoint (no conv_block1.conv1.weight)")
    model = Cnn14(n_freq=int(n_freq), n_classes=n_classes)
    own = model.state_dict()
    skip = ("fc_audioset",) + (("bn0.",) if int(n_freq) != 64 else ())
    new = {}
    for k, v in state.items():
        if k.startswith("bn0."):
            k = "bn0.bn." + k[len("bn0."):]
        if k not in own or k.startswith(skip):
            continue
        if v.dim() == 4:  # conv kernels [out, in, time, mel] -> [out, in, mel, time]
            v = v.transpose(2, 3)
        if own[k].shape != v.shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, CNN14 expects {tuple(own[k].shape)}")
        new[k] = v
    missing = [k for k in own if k not in new and not k.startswith(skip)]
    if missing:
        raise CheckpointError(f"{path} lacks CNN14 weights {missing[:3]}")
    model.load_state_dict(new, strict=False)
    model._audiointerp_architecture = "Cnn14"
    return model


# ---------------------------------------------------------------------------------------------
# Checkpoints

def save_checkpoint(path: str | os.PathLike, model: nn.Module, arch_args: dict, features: FeatureConfig,
                    class_names: list[str], metrics: dict | None = None, training: dict | None = None) -> Path:
    """Write a self-describing classifier checkpoint (atomically).

    The file holds: format tag, architecture name and constructor arguments, feature
    configuration, class names, state_dict, metrics, training configuration, package versions
    and the git commit of the code that wrote it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "architecture": architecture_name(model),
        "arch_args": dict(arch_args),
        "features": features.to_dict(),
        "class_names": list(class_names),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metrics": dict(metrics or {}),
        "training": dict(training or {}),
        "versions": package_versions(),
        "git_commit": git_commit(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint"):
    """``torch.load`` a file on the CPU (any pickled object).

    Raises:
        CheckpointError: ``"<what> not found: <path>"`` or ``"cannot read <what> <path>: <reason>"``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc}") from None


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate a checkpoint dict written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing file, unreadable file, not an audiointerp checkpoint, or a
            feature configuration that does not fit the architecture (names both values).
    """
    path = Path(path)
    ckpt = load_torch_file(path, "checkpoint")
    need = {"format", "architecture", "arch_args", "features", "class_names", "state_dict"}
    if not isinstance(ckpt, dict) or not need <= set(ckpt):
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not an audiointerp classifier checkpoint (needs keys "
                              f"{sorted(need)}, has {have})")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has format {ckpt['format']!r}, expected {CHECKPOINT_FORMAT!r}")
    features = FeatureConfig.from_dict(ckpt["features"])
    n_freq = ckpt["arch_args"].get("n_freq")
    if n_freq is not None and int(n_freq) != features.n_freq:
        raise CheckpointError(f"{path}: feature configuration gives {features.n_freq} frequency rows "
                              f"({features.kind}) but the model was built for n_freq={n_freq}")
    n_classes = ckpt["arch_args"].get("n_classes", 50)
    if len(ckpt["class_names"]) != n_classes:
        raise CheckpointError(f"{path}: {len(ckpt['class_names'])} class names for n_classes={n_classes}")
    ckpt["path"] = str(path)
    return ckpt


def load_weights(model: nn.Module, state_dict: dict, context: str) -> nn.Module:
    """``model.load_state_dict(state_dict)``, turning a mismatch into one CheckpointError.

    Raises:
        CheckpointError: ``context`` followed by torch's first reason (missing key, size mismatch).
    """
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        # torch's first line is only "Error(s) in loading state_dict for X:"; quote the first reason
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise CheckpointError(f"{context}: {lines[1] if len(lines) > 1 else lines[0]}") from None
    return model


def load_classifier(path: str | os.PathLike, features: FeatureConfig | None = None, device=None):
    """Load a classifier checkpoint.

    Args:
        path: file written by :func:`save_checkpoint`.
        features: optional feature configuration the caller intends to use; it must equal the
            checkpoint's.
        device: where the model goes (:func:`audiointerp.devices.resolve_device`: ``"auto"``,
            ``"cpu"``, ``"cuda:N"``, ...); None keeps it on the CPU.

    Returns:
        ``(model, extractor, ckpt)``: the model in eval mode (channels_last) on ``device``, a
        :class:`FeatureExtractor` with the checkpoint's feature configuration, and the
        checkpoint dict (class names, metrics, ...).

    Raises:
        CheckpointError: see :func:`read_checkpoint`; ``features`` differing from the
            checkpoint's (both are quoted); an architecture that cannot be imported or built;
            weights that do not fit it; a model (not one of :data:`ARCHITECTURES`) that breaks the
            contract (:func:`check_contract`).
        ConfigError: a device that is not present.
    """
    from .devices import resolve_device

    ckpt = read_checkpoint(path)
    cfg = FeatureConfig.from_dict(ckpt["features"])
    if features is not None and features != cfg:
        raise CheckpointError(f"{path} was trained on features {cfg.to_dict()}, not {features.to_dict()}")
    try:
        model = build_model(ckpt["architecture"], **ckpt["arch_args"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    load_weights(model, ckpt["state_dict"], f"{path}: weights do not fit {ckpt['architecture']}({ckpt['arch_args']})")
    if ckpt["architecture"] not in ("CompactCNN", "Cnn14"):
        try:
            check_contract(model, cfg.n_freq, cfg.n_frames, len(ckpt["class_names"]))
        except ConfigError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    dev = resolve_device("cpu" if device is None else device)
    model.eval().to(dev, memory_format=torch.channels_last)
    return model, FeatureExtractor(cfg), ckpt


def model_name(ckpt: dict) -> str:
    """Short name of a checkpoint for results folders: the file stem."""
    return Path(ckpt.get("path", "model")).stem


def clone_state(model: nn.Module) -> dict:
    """A detached deep copy of ``model.state_dict()`` (a copy, not references to live weights)."""
    return copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})


@torch.inference_mode()
def predict_logits(model: nn.Module, feats: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Logits ``[n, n_classes]`` (float32, on the model's device) of features ``[n, 1, n_freq, n_frames]``
    (dB, on any device: each batch is moved to the model's) in eval mode, ``batch_size`` clips per
    forward pass (channels_last); the model's training flag is restored."""
    was_training = model.training
    model.eval()
    dev = next(iter(model.parameters()), feats).device
    out = [model(feats[i:i + batch_size].to(dev).contiguous(memory_format=torch.channels_last))
           for i in range(0, len(feats), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, device=dev)
