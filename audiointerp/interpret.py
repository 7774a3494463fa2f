"""Attribution maps of a classifier's decision, one interface for every method.

``method.attribute(x, target) -> tensor shaped like x`` with ``x`` features
``[batch, 1, n_freq, n_frames]`` (dB) and ``target`` int64 ``[batch]`` (in the runner: the
predicted class). Attributions are signed float32 maps; masks are built from them in
:mod:`audiointerp.masks`.

* ``saliency`` -- captum ``Saliency``: the signed gradient of the target logit w.r.t. the
  input (Simonyan et al., "Deep Inside Convolutional Networks", ICLR workshop 2014).
* ``gradcam`` -- captum ``LayerGradCam`` on the model's last convolutional block
  (``model.cam_layer``), signed (no ReLU), bilinearly upsampled from ``[F', T']`` to
  ``[n_freq, n_frames]``; the layer keeps frequency as rows, so rows stay frequency
  (Selvaraju et al., "Grad-CAM", ICCV 2017).
* ``shap`` -- the shap library's ``GradientExplainer`` (expected gradients; Lundberg & Lee,
  NeurIPS 2017; Erion et al., Nature MI 2021) of the target logit. The background is
  ``background_size`` clips of the training folds (2 per class by default: every class is
  represented, and background size does not change the cost, only memory); ``nsamples``
  (default 32) reference/interpolation draws per clip, each one forward and backward pass,
  which is what SHAP costs. 32 keeps the 400-clip experiment within its 20-minute budget on a
  2-core CPU (SHAP: 6.8 min). The price is Monte-Carlo noise: measured by
  ``scripts/benchmark.py`` on the mel model, two 32-draw maps of a clip (different seeds)
  correlate at r = 0.66, and a 32-draw map with a 128-draw map at r = 0.76. Draws are seeded
  per clip, so a resumed run is identical.

* ``piq`` / ``l2i`` -- the learned interpreters of :mod:`audiointerp.learned` (PIQ: Paissan et
  al. 2023; L2I: Parekh et al., NeurIPS 2022), loaded from a checkpoint trained for this
  classifier. Their native output is a mask over the clip's log1p STFT
  (:meth:`LearnedMethod.native_mask`); ``attribute`` returns their real-valued map (PIQ: the
  decoder's mask logits; L2I: the relevance-weighted NMF ratio) carried to the feature grid,
  from which the 14 masks are built like for the other methods.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .errors import ConfigError, unknown_name


def _check(x: torch.Tensor, target) -> torch.Tensor:
    if x.dim() != 4 or x.shape[1] != 1:
        raise ConfigError(f"attribute expects x of shape [batch, 1, n_freq, n_frames], got {tuple(x.shape)}")
    target = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if target.numel() == 1 and x.shape[0] > 1:
        target = target.expand(x.shape[0])
    if target.numel() != x.shape[0]:
        raise ConfigError(f"target has {target.numel()} entries for a batch of {x.shape[0]}")
    return target


class Attribution:
    """Base class: ``attribute(x [batch, 1, F, T] float32, target int64 [batch]) -> [batch, 1, F, T]``."""

    name = "attribution"

    def __init__(self, model: nn.Module):
        self.model = model.eval()

    def attribute(self, x: torch.Tensor, target, **kwargs) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class SaliencyMethod(Attribution):
    """Signed input gradient of the target logit (captum ``Saliency`` with ``abs=False``)."""

    name = "saliency"

    def __init__(self, model: nn.Module):
        from captum.attr import Saliency

        super().__init__(model)
        self._impl = Saliency(self.model)

    def attribute(self, x, target, **kwargs):
        """``[batch, 1, F, T]`` gradient of the target logit w.r.t. ``x`` (units: logit per dB)."""
        target = _check(x, target)
        return self._impl.attribute(x.detach().clone().requires_grad_(True), target=target, abs=False).detach()


class GradCAMMethod(Attribution):
    """Signed Grad-CAM (captum ``LayerGradCam``, ``relu_attributions=False``) on ``model.cam_layer``."""

    name = "gradcam"

    def __init__(self, model: nn.Module, layer: nn.Module | None = None):
        from captum.attr import LayerGradCam

        super().__init__(model)
        layer = layer if layer is not None else getattr(model, "cam_layer", None)
        if layer is None:
            raise ConfigError(f"{type(model).__name__} has no cam_layer: pass the last conv layer as layer=")
        self._impl = LayerGradCam(self.model, layer)

    def attribute(self, x, target, **kwargs):
        """``[batch, 1, F, T]``: the layer map ``[batch, 1, F', T']`` upsampled bilinearly."""
        from captum.attr import LayerAttribution

        target = _check(x, target)
        cam = self._impl.attribute(x.detach().clone().requires_grad_(True), target=target, relu_attributions=False)
        return LayerAttribution.interpolate(cam.detach(), tuple(x.shape[2:]), interpolate_mode="bilinear",
                                            ).contiguous()


class _TargetLogit(nn.Module):
    """``[batch, 1, F, T] -> [batch, 1]``: the logit of one class (set ``.target`` per call)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.target = 0

    def forward(self, x):
        return self.model(x)[:, self.target:self.target + 1]


class SHAPMethod(Attribution):
    """Expected-gradients SHAP values of the target logit (shap ``GradientExplainer``).

    Args:
        model: the classifier.
        background: features ``[n_background, 1, F, T]`` of training clips.
        nsamples: draws per clip (forward+backward passes); see the module docstring.
        seed: base seed; clip ``i`` of a call uses ``seed + seeds[i]`` (or ``seed + i``).
        batch_size: draws per forward pass.

    Raises:
        ConfigError: empty background or a background of another shape than the inputs.
    """

    name = "shap"

    def __init__(self, model: nn.Module, background: torch.Tensor, nsamples: int = 32, seed: int = 0,
                 batch_size: int = 32):
        import shap

        super().__init__(model)
        if background is None or background.dim() != 4 or len(background) == 0:
            raise ConfigError("SHAP needs a background of features [n_background, 1, n_freq, n_frames]")
        if nsamples < 1:
            raise ConfigError(f"SHAP nsamples must be >= 1, got {nsamples}")
        self.background = background
        self.nsamples, self.seed = int(nsamples), int(seed)
        self._wrapper = _TargetLogit(self.model)
        self._explainer = shap.GradientExplainer(self._wrapper, background, batch_size=batch_size)

    def attribute(self, x, target, seeds=None, **kwargs):
        """``[batch, 1, F, T]`` SHAP values (logit units, summing approx. to f(x) - E[f(background)]).

        ``seeds``: optional per-clip ints (e.g. dataset indices) so a clip's map does not depend
        on the batch it was computed in.
        """
        target = _check(x, target)
        if x.shape[1:] != self.background.shape[1:]:
            raise ConfigError(f"SHAP background has shape {tuple(self.background.shape[1:])}, "
                              f"inputs {tuple(x.shape[1:])}")
        seeds = list(range(len(x))) if seeds is None else [int(s) for s in seeds]
        out = []
        for i in range(len(x)):
            self._wrapper.target = int(target[i])
            phi = self._explainer.shap_values(x[i:i + 1].detach().clone(), nsamples=self.nsamples,
                                              rseed=self.seed + seeds[i])
            out.append(torch.from_numpy(np.asarray(phi, dtype=np.float32)).reshape(x[i:i + 1].shape))
        return torch.cat(out)


class LearnedMethod(Attribution):
    """A learned interpreter (PIQ or L2I) behind the ``attribute`` interface.

    Args:
        model: the classifier (frozen; its ``cam_layer`` output feeds the interpreter).
        interpreter: an interpreter checkpoint path or an ``(net, ckpt)`` pair from
            :func:`audiointerp.learned.load_interpreter`.
        classifier_checkpoint: the classifier's checkpoint file; when given, the interpreter
            must have been trained for it (SHA-256 checked).
        features: the classifier's feature configuration (default: the interpreter's).

    Raises:
        CheckpointError: bad interpreter checkpoint, another kind, another classifier, or a
            feature configuration other than the interpreter's (both quoted).
    """

    name = "learned"

    def __init__(self, model: nn.Module, interpreter, classifier_checkpoint=None, features=None):
        from .errors import CheckpointError
        from .learned import HiddenMap, load_interpreter
        from .processing import FeatureConfig

        super().__init__(model)
        if isinstance(interpreter, tuple):
            self.net, self.ckpt = interpreter
        else:
            self.net, self.ckpt = load_interpreter(interpreter, classifier_checkpoint, kind=self.name)
        self.cfg = FeatureConfig.from_dict(self.ckpt["features"])
        if features is not None and features != self.cfg:
            raise CheckpointError(f"interpreter {self.ckpt.get('path')} was trained on features "
                                  f"{self.cfg.to_dict()}, not {features.to_dict()}")
        self._hidden = HiddenMap(model)

    def _explain(self, x, target):
        target = _check(x, target)
        with torch.no_grad():
            _, hidden = self._hidden(x)
            if tuple(hidden.shape[1:]) != tuple(self.net.hidden_shape):
                raise ConfigError(f"the classifier's hidden map is {tuple(hidden.shape[1:])} but the {self.name} "
                                   f"interpreter was trained on {tuple(self.net.hidden_shape)} (another classifier "
                                   f"or clip length)")
            return self.net.explain(hidden, target)

    def native_mask(self, x: torch.Tensor, target) -> torch.Tensor:
        """The method's own mask over the log1p STFT: float32 ``[batch, 1, n_fft//2+1, n_frames]``
        in [0, 1] (apply with :func:`audiointerp.learned.masked_magnitude`)."""
        return self._explain(x, target)[0][:, None].contiguous()

    def attribute(self, x, target, **kwargs):
        """``[batch, 1, n_freq, n_frames]``: the real-valued map on the classifier's feature grid
        (:func:`audiointerp.learned.to_feature_grid`)."""
        from .learned import to_feature_grid

        return to_feature_grid(self._explain(x, target)[1][:, None], self.cfg).contiguous()

    def explain(self, x: torch.Tensor, target) -> tuple[torch.Tensor, torch.Tensor]:
        """``(native_mask, attribute)`` from one pass (shapes as in the two methods)."""
        from .learned import to_feature_grid

        mask, amap = self._explain(x, target)
        return mask[:, None].contiguous(), to_feature_grid(amap[:, None], self.cfg).contiguous()


class PIQMethod(LearnedMethod):
    """PIQ (Paissan et al., "Posthoc Interpretation via Quantization", 2023): map = mask logits."""

    name = "piq"


class L2IMethod(LearnedMethod):
    """L2I (Parekh et al., NeurIPS 2022): map = relevance-weighted NMF ratio, mask = W_S H_S / W H."""

    name = "l2i"


METHODS = {"saliency": SaliencyMethod, "gradcam": GradCAMMethod, "shap": SHAPMethod, "piq": PIQMethod,
           "l2i": L2IMethod}
LEARNED = ("piq", "l2i")


def make_method(name: str, model: nn.Module, **kwargs) -> Attribution:
    """Instantiate attribution method ``name`` ('saliency', 'gradcam', 'shap', 'piq', 'l2i') for ``model``.

    ``kwargs`` go to the method (SHAP needs ``background``; PIQ and L2I an ``interpreter``).

    Raises:
        ConfigError: unknown name (lists the valid ones).
    """
    if name not in METHODS:
        raise unknown_name("method", name, METHODS)
    return METHODS[name](model, **kwargs)


def attribute(method: str, model: nn.Module, x: torch.Tensor, target, **kwargs) -> torch.Tensor:
    """One-call form: ``make_method(method, model, **kwargs).attribute(x, target)``."""
    return make_method(method, model, **kwargs).attribute(x, target)


def stratified_background(labels: np.ndarray, per_class: int = 2, seed: int = 0) -> np.ndarray:
    """Indices of ``per_class`` clips of each class (seeded), sorted; labels int ``[n]``."""
    rng = np.random.default_rng(seed)
    idx = [rng.choice(np.flatnonzero(labels == c), size=min(per_class, int((labels == c).sum())), replace=False)
           for c in np.unique(labels)]
    return np.sort(np.concatenate(idx))
