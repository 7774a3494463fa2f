"""Shared pieces of the learned interpreters: the classifier's hidden maps, exact output sizes.

L2I and PIQ read the frozen classifier's hidden feature map ``model.cam_layer``
(:class:`HiddenMap`); L-MAC reads several of its convolutional blocks at once
(:class:`HiddenMaps`, :func:`conv_block_names`, :func:`default_lmac_layers`). Every decoder's
mask must cover every STFT frame (:func:`match_size`: interpolated to the exact size, never a
frame dropped or padded silently).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..models import ConvBlock


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


def _run_hooked(model: nn.Module, layers: list[nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """``model(x)`` with forward hooks on ``layers`` for this call only: ``(logits, [outputs])``
    in the order of ``layers`` (the last output of a layer called twice)."""
    store: dict[int, torch.Tensor] = {}
    handles = [layer.register_forward_hook(lambda mod, inp, out, i=i: store.__setitem__(i, out))
               for i, layer in enumerate(layers)]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [i for i in range(len(layers)) if i not in store]
    if missing:
        raise ConfigError(f"layer {missing[0]} of {len(layers)} was not called by {type(model).__name__}.forward")
    return logits, [store[i].contiguous() for i in range(len(layers))]


class HiddenMap:
    """Run a classifier and capture the output of one layer (default ``model.cam_layer``).

    ``hm(x) -> (logits [batch, n_classes], hidden [batch, channels, F', T'])`` for features
    ``x [batch, 1, n_freq, n_frames]`` (dB). The hook is registered for the call only.
    (Several layers at once: :class:`HiddenMaps`.)

    Raises:
        ConfigError: the model has no ``cam_layer`` and no layer is given.
    """

    def __init__(self, model: nn.Module, layer: nn.Module | None = None):
        layer = layer if layer is not None else getattr(model, "cam_layer", None)
        if layer is None:
            raise ConfigError(f"{type(model).__name__} has no cam_layer: pass the hidden layer as layer=")
        self.model, self.layer = model, layer

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [batch, n_classes], hidden [batch, channels, F', T'])`` of features ``x``."""
        logits, (hidden,) = _run_hooked(self.model, [self.layer], x)
        return logits, hidden


def conv_block_names(model: nn.Module) -> list[str]:
    """Names (``model.get_submodule`` paths) of the classifier's :class:`~audiointerp.models.ConvBlock` s
    in the order they are registered, which is the forward order for :class:`~audiointerp.models.CompactCNN`
    (``blocks.0`` … ``blocks.3``) and :class:`~audiointerp.models.Cnn14` (``conv_block1`` … ``conv_block6``)."""
    return [name for name, m in model.named_modules() if isinstance(m, ConvBlock)]


def default_lmac_layers(model: nn.Module) -> list[str]:
    """L-MAC's default blocks: the last four conv blocks of a deep classifier (six or more blocks,
    e.g. CNN14's ``conv_block3``-``conv_block6``, the 256/512/1024/2048-channel outputs SpeechBrain's
    ``CNN14PSI_stft`` decoder fuses; Paissan et al., ICML 2024), the last three otherwise (CompactCNN's
    ``blocks.1``-``blocks.3``: its first block's 16-channel map is left out), deepest last.

    Raises:
        ConfigError: the model has no ConvBlock (pass the layers by name).
    """
    names = conv_block_names(model)
    if not names:
        raise ConfigError(f"{type(model).__name__} has no ConvBlock layers: give L-MAC's layers by name (layers=)")
    return names[-4:] if len(names) >= 6 else names[-3:]


class HiddenMaps:
    """Run a classifier and capture the outputs of several named layers (L-MAC's decoder input).

    ``hm(x) -> (logits [batch, n_classes], [hidden_i [batch, C_i, F_i, T_i] for each layer])`` for
    features ``x [batch, 1, n_freq, n_frames]`` (dB), in the order of ``layers``. The hooks are
    registered for the call only; gradients flow through the outputs when the call has them on.

    Args:
        model: the classifier.
        layers: ``model.get_submodule`` paths, e.g. ``["blocks.1", "blocks.2", "blocks.3"]``
            (default: :func:`default_lmac_layers`).

    Raises:
        ConfigError: an unknown layer name (named, with the model's conv blocks listed) or an
            empty list.
    """

    def __init__(self, model: nn.Module, layers=None):
        names = list(default_lmac_layers(model) if layers is None else layers)
        if not names:
            raise ConfigError("HiddenMaps needs at least one layer name")
        modules = []
        for name in names:
            try:
                modules.append(model.get_submodule(str(name)))
            except AttributeError:
                raise ConfigError(f"{type(model).__name__} has no layer {name!r}; its conv blocks are "
                                  f"{conv_block_names(model)}") from None
        self.model, self.names, self.layers = model, names, modules

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        """``(logits [batch, n_classes], [hidden_i [batch, C_i, F_i, T_i]])`` of features ``x``."""
        return _run_hooked(self.model, self.layers, x)
