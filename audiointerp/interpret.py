"""Attribution maps of a classifier's decision: one factory, one verb for every method.

:func:`make_method` builds any method by name; every method answers
``method.attribute(x, target, seeds=None) -> tensor shaped like x`` with ``x`` features
``[batch, 1, n_freq, n_frames]`` (dB), ``target`` int64 ``[batch]`` (in the runner: the
predicted class) and ``seeds`` optional per-clip ints that make a stochastic method's draws
independent of the batch a clip is in (deterministic methods ignore them). Attributions are
signed float32 maps; masks are built from them in :mod:`audiointerp.masks`.

Optional capability: a method that owns a mask of its own (PIQ, L2I) also implements
:class:`NativeMask` (``native_mask(x, target)``, a mask over the clip's log1p STFT); the scoring
layer asks for it with :func:`has_native_mask` — callers never branch on method names.

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

from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn as nn

from .errors import ConfigError, DatasetError, unknown_name
from .processing import FeatureConfig, linear_to_feature_grid


def _check(x: torch.Tensor, target) -> torch.Tensor:
    if x.dim() != 4 or x.shape[1] != 1:
        raise ConfigError(f"attribute expects x of shape [batch, 1, n_freq, n_frames], got {tuple(x.shape)}")
    target = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if target.numel() == 1 and x.shape[0] > 1:
        target = target.expand(x.shape[0])
    if target.numel() != x.shape[0]:
        raise ConfigError(f"target has {target.numel()} entries for a batch of {x.shape[0]}")
    return target.to(x.device)


def _seeds(x: torch.Tensor, seeds) -> list[int]:
    seeds = list(range(len(x))) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(x):
        raise ConfigError(f"seeds has {len(seeds)} entries for a batch of {len(x)}")
    return seeds


class Attribution:
    """Base class: ``attribute(x [batch, 1, F, T] float32, target int64 [batch], seeds=None)
    -> [batch, 1, F, T]`` float32.

    Attributes:
        name: the method's name in :data:`METHODS`.
        stochastic: True when the map depends on random draws (seeded per clip by ``seeds``).
    """

    name = "attribution"
    stochastic = False

    def __init__(self, model: nn.Module):
        self.model = model.eval()

    def attribute(self, x: torch.Tensor, target, seeds=None) -> torch.Tensor:  # pragma: no cover
        """The signed attribution map of ``target`` for each clip, shaped like ``x``."""
        raise NotImplementedError


class NativeMask:
    """Capability of a method with a mask of its own (PIQ, L2I): ``native_mask(x, target)``.

    The mask is float32 ``[batch, 1, n_fft//2+1, n_frames]`` in [0, 1] over the clip's
    ``log(1 + |STFT|)`` (:func:`audiointerp.processing.log1p_stft`), applied with
    :func:`audiointerp.masks.apply_log1p_mask`.
    """

    def native_mask(self, x: torch.Tensor, target) -> torch.Tensor:  # pragma: no cover
        """The method's own mask of ``target`` for each clip (see the class docstring)."""
        raise NotImplementedError


def has_native_mask(method: Attribution) -> bool:
    """True when ``method`` has the :class:`NativeMask` capability."""
    return isinstance(method, NativeMask)


class SaliencyMethod(Attribution):
    """Signed input gradient of the target logit (captum ``Saliency`` with ``abs=False``;
    Simonyan et al., "Deep Inside Convolutional Networks", ICLR workshop 2014). Deterministic."""

    name = "saliency"

    def __init__(self, model: nn.Module):
        from captum.attr import Saliency

        super().__init__(model)
        self._impl = Saliency(self.model)

    def attribute(self, x, target, seeds=None):
        """``[batch, 1, F, T]`` gradient of the target logit w.r.t. ``x`` (units: logit per dB);
        ``seeds`` is accepted and not needed (deterministic)."""
        target = _check(x, target)
        with torch.enable_grad():
            return self._impl.attribute(x.detach().clone().requires_grad_(True), target=target, abs=False).detach()


class GradCAMMethod(Attribution):
    """Signed Grad-CAM (captum ``LayerGradCam``, ``relu_attributions=False``) on ``model.cam_layer``
    (Selvaraju et al., "Grad-CAM", ICCV 2017). The layer keeps frequency as rows, so the upsampled
    map's rows stay frequency (no transposition). Deterministic.

    Raises:
        ConfigError: the model has no ``cam_layer`` and no ``layer`` is given.
    """

    name = "gradcam"

    def __init__(self, model: nn.Module, layer: nn.Module | None = None):
        from captum.attr import LayerGradCam

        super().__init__(model)
        layer = layer if layer is not None else getattr(model, "cam_layer", None)
        if layer is None:
            raise ConfigError(f"{type(model).__name__} has no cam_layer: pass the last conv layer as layer=")
        self._impl = LayerGradCam(self.model, layer)

    def attribute(self, x, target, seeds=None):
        """``[batch, 1, F, T]``: the layer map ``[batch, 1, F', T']`` upsampled bilinearly;
        ``seeds`` is accepted and not needed (deterministic)."""
        from captum.attr import LayerAttribution

        target = _check(x, target)
        with torch.enable_grad():
            cam = self._impl.attribute(x.detach().clone().requires_grad_(True), target=target,
                                       relu_attributions=False)
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
    """Expected-gradients SHAP values of the target logit (shap ``GradientExplainer``; Lundberg &
    Lee, NeurIPS 2017; Erion et al., Nature MI 2021).

    Args:
        model: the classifier.
        background: features ``[n_background, 1, F, T]`` of training clips (:func:`shap_background`).
        nsamples: draws per clip (forward+backward passes); see the module docstring.
        seed: base seed; clip ``i`` of a call uses ``seed + seeds[i]`` (or ``seed + i``).
        batch_size: draws per forward pass.

    Raises:
        ConfigError: empty background, ``nsamples`` < 1, or a background of another shape than
            the inputs.
    """

    name = "shap"
    stochastic = True

    def __init__(self, model: nn.Module, background: torch.Tensor, nsamples: int = 32, seed: int = 0,
                 batch_size: int = 32):
        import shap

        super().__init__(model)
        if background is None or background.dim() != 4 or len(background) == 0:
            raise ConfigError("SHAP needs a background of features [n_background, 1, n_freq, n_frames]")
        if int(nsamples) < 1:
            raise ConfigError(f"SHAP nsamples must be >= 1, got {nsamples!r}")
        self.background = background
        self.nsamples, self.seed = int(nsamples), int(seed)
        self._wrapper = _TargetLogit(self.model)
        self._explainer = shap.GradientExplainer(self._wrapper, background, batch_size=batch_size)

    def attribute(self, x, target, seeds=None):
        """``[batch, 1, F, T]`` SHAP values (logit units, summing approx. to f(x) - E[f(background)]).

        ``seeds``: per-clip ints (the runner passes each clip's index in its fold) so a clip's
        map does not depend on the batch it was computed in.
        """
        target = _check(x, target)
        if x.shape[1:] != self.background.shape[1:]:
            raise ConfigError(f"SHAP background has shape {tuple(self.background.shape[1:])}, "
                              f"inputs {tuple(x.shape[1:])}")
        seeds = _seeds(x, seeds)
        out = []
        with torch.enable_grad():
            for i in range(len(x)):
                self._wrapper.target = int(target[i])
                phi = self._explainer.shap_values(x[i:i + 1].detach().clone(), nsamples=self.nsamples,
                                                  rseed=self.seed + seeds[i])
                out.append(torch.from_numpy(np.asarray(phi, dtype=np.float32)).reshape(x[i:i + 1].shape))
        return torch.cat(out).to(x.device)


class LearnedMethod(Attribution, NativeMask):
    """A learned interpreter (PIQ or L2I) behind the ``attribute`` verb, with its native mask.

    ``attribute`` returns the interpreter's real-valued map carried to the classifier's feature
    grid (PIQ: the decoder's mask logits; L2I: the relevance-weighted NMF ratio); ``native_mask``
    its own mask over the log1p STFT. Both come from one pass of the interpreter: the last pass
    is remembered, so asking for both costs one.

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
        self._last = None

    def _explain(self, x, target):
        target = _check(x, target)
        last = self._last
        if last is not None and last[0] is x and torch.equal(last[1], target):
            return last[2]
        self.net.to(x.device)
        with torch.no_grad():
            _, hidden = self._hidden(x)
            if tuple(hidden.shape[1:]) != tuple(self.net.hidden_shape):
                raise ConfigError(f"the classifier's hidden map is {tuple(hidden.shape[1:])} but the {self.name} "
                                  f"interpreter was trained on {tuple(self.net.hidden_shape)} (another classifier "
                                  f"or clip length)")
            mask, amap = self.net.explain(hidden, target)
        out = (mask[:, None].contiguous(), linear_to_feature_grid(amap[:, None], self.cfg).contiguous())
        self._last = (x, target, out)
        return out

    def native_mask(self, x: torch.Tensor, target) -> torch.Tensor:
        """The method's own mask over the log1p STFT: float32 ``[batch, 1, n_fft//2+1, n_frames]``
        in [0, 1] (apply with :func:`audiointerp.masks.apply_log1p_mask`)."""
        return self._explain(x, target)[0]

    def attribute(self, x, target, seeds=None):
        """``[batch, 1, n_freq, n_frames]``: the real-valued map on the classifier's feature grid
        (:func:`audiointerp.processing.linear_to_feature_grid`); ``seeds`` is not needed
        (deterministic)."""
        return self._explain(x, target)[1]


class PIQMethod(LearnedMethod):
    """PIQ (Paissan et al., "Posthoc Interpretation via Quantization", 2023): map = mask logits."""

    name = "piq"


class L2IMethod(LearnedMethod):
    """L2I (Parekh et al., NeurIPS 2022): map = relevance-weighted NMF ratio, mask = W_S H_S / W H."""

    name = "l2i"


# ---------------------------------------------------------------------------------------------
# The factory


@dataclass
class MethodOptions:
    """What the methods may need besides the classifier (each method takes the fields it uses).

    Attributes:
        features: the classifier's :class:`~audiointerp.processing.FeatureConfig`.
        checkpoint: the classifier's checkpoint file (learned methods find their interpreter next
            to it and check its SHA-256).
        root: ESC-50 root (None: ``ESC50_ROOT``), for SHAP's background.
        seed: base seed of stochastic methods and of SHAP's background choice.
        shap_nsamples: SHAP draws per clip; shap_background_per_class: background clips per class.
        background: SHAP background features ``[n, 1, F, T]`` (None: :func:`shap_background`).
        interpreter: a learned method's checkpoint (None: ``<method>_<classifier stem>.pt`` next
            to ``checkpoint``).
    """

    features: FeatureConfig | None = None
    checkpoint: str | None = None
    root: str | None = None
    seed: int = 0
    shap_nsamples: int = 32
    shap_background_per_class: int = 2
    background: torch.Tensor | None = field(default=None, repr=False)
    interpreter: object = None


def _saliency(model, o: MethodOptions) -> Attribution:
    return SaliencyMethod(model)


def _gradcam(model, o: MethodOptions) -> Attribution:
    return GradCAMMethod(model)


def _shap(model, o: MethodOptions) -> Attribution:
    bg = o.background
    if bg is None:
        if o.features is None:
            raise ConfigError("SHAP needs the classifier's feature configuration (features=) for its background")
        bg = shap_background(o.root, o.features, o.shap_background_per_class, o.seed)
    return SHAPMethod(model, bg, nsamples=o.shap_nsamples, seed=o.seed)


def _learned(cls):
    def build(model, o: MethodOptions) -> Attribution:
        from .learned import default_interpreter_path

        if o.interpreter is None and o.checkpoint is None:
            raise ConfigError(f"{cls.name} needs the classifier's checkpoint= or its interpreter= checkpoint")
        interp = o.interpreter if o.interpreter is not None else default_interpreter_path(o.checkpoint, cls.name)
        return cls(model, interp, classifier_checkpoint=o.checkpoint, features=o.features)
    return build


#: name -> builder ``(model, MethodOptions) -> Attribution``, in table order.
METHODS = {"saliency": _saliency, "gradcam": _gradcam, "shap": _shap, "piq": _learned(PIQMethod),
           "l2i": _learned(L2IMethod)}
#: methods that load a trained interpreter checkpoint
LEARNED = ("piq", "l2i")


def check_method(name: str) -> str:
    """Return ``name`` if it is a method of :data:`METHODS`, else raise ConfigError listing them."""
    if name not in METHODS:
        raise unknown_name("method", name, METHODS)
    return name


def make_method(name: str, model: nn.Module, **options) -> Attribution:
    """Build attribution method ``name`` for ``model``: the one factory of every method.

    Args:
        name: a key of :data:`METHODS` (``saliency``, ``gradcam``, ``shap``, ``piq``, ``l2i``).
        model: the classifier (eval mode).
        options: fields of :class:`MethodOptions` (e.g. ``features``, ``checkpoint``, ``root``,
            ``seed``, ``shap_nsamples``, ``interpreter``); each method uses what it needs.

    Raises:
        ConfigError: unknown method or option (lists the valid ones); SHAP without features or a
            background.
        DatasetError: SHAP's background needs the training folds, and they have no clips.
        CheckpointError: a learned method's interpreter is missing or was trained for another
            classifier.
    """
    check_method(name)
    valid = {f.name for f in fields(MethodOptions)}
    for k in options:
        if k not in valid:
            raise unknown_name("method option", k, valid)
    return METHODS[name](model, MethodOptions(**options))


def stratified_background(labels: np.ndarray, per_class: int = 2, seed: int = 0) -> np.ndarray:
    """Indices of ``per_class`` clips of each class (seeded), sorted; labels int ``[n]``."""
    rng = np.random.default_rng(seed)
    idx = [rng.choice(np.flatnonzero(labels == c), size=min(per_class, int((labels == c).sum())), replace=False)
           for c in np.unique(labels)]
    return np.sort(np.concatenate(idx))


def shap_background(root, fcfg: FeatureConfig, per_class: int = 2, seed: int = 0, folds=None,
                    progress: bool = False) -> torch.Tensor:
    """SHAP's background: ``per_class`` seeded clips of every class of the training folds (1-3),
    as features ``[n_bg, 1, F, T]`` (dB) from the feature cache
    (:func:`stratified_background`, :func:`audiointerp.data.fold_features`).

    Raises:
        DatasetError: the training folds hold no clips (named), or the dataset root is wrong.
    """
    from .data import ESC50, TRAIN_FOLDS, fold_features

    folds = TRAIN_FOLDS if folds is None else tuple(folds)
    try:
        tr = ESC50(root, folds, fcfg.sample_rate, fcfg.duration)
    except DatasetError as exc:
        raise DatasetError(f"SHAP's background comes from the training folds {list(folds)}: {exc}") from None
    if len(tr) == 0:
        raise DatasetError(f"SHAP's background comes from the training folds {list(folds)}, which hold no clips")
    bg_idx = stratified_background(tr.labels, per_class, seed)
    return fold_features(tr, fcfg, progress=progress)[torch.from_numpy(bg_idx)]
