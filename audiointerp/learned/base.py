"""Shared pieces of the learned interpreters: the classifier's hidden map, exact output sizes.

Every learned interpreter (L2I, PIQ) reads the frozen classifier's hidden feature map
``model.cam_layer`` (:class:`HiddenMap`) and decodes a mask that must cover every STFT frame
(:func:`match_size`: interpolated to the exact size, never a frame dropped or padded silently).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError


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
        """``(logits [batch, n_classes], hidden [batch, channels, F', T'])`` of features ``x``."""
        store = {}
        handle = self.layer.register_forward_hook(lambda mod, inp, out: store.__setitem__("h", out))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        return logits, store["h"].contiguous()
