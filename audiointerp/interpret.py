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

* ``lime`` -- LIME as the prior art ran it (``lime`` 0.2's ``LimeImageExplainer`` on the dB
  map; Ribeiro et al., "Why Should I Trust You?", KDD 2016), computed with captum's ``Lime``
  (:class:`LimeMethod`): superpixels by scikit-image's quickshift (Vedaldi & Soatto, ECCV 2008)
  on the per-clip min-max normalised map (or a regular time-frequency grid of patches), an "off"
  superpixel replaced by its mean dB value, ``lime_nsamples`` (1000) binary samples, the first
  one all "on", weighted by the exponential kernel (width 0.25) of their cosine distance to it,
  a Ridge surrogate (alpha 1) of the explained class's probability; each bin gets its
  superpixel's signed weight. Seeded per clip. Its cost is its forward passes
  (``scripts/benchmark.py`` prints the ratio: 1.03-1.12 on a shared CPU). Measured by
  ``scripts/lime_samples.py`` on 16 fold-5 clips (mel model): maps of 300 samples agree with the
  1000-sample map as well as two 1000-sample maps agree (topK_30_pos IoU 0.86 vs 0.87, Spearman
  0.87 vs 0.88, Pearson 0.99 vs 0.99); 100 samples fall short (IoU 0.70, Spearman 0.80).
* ``captum:<ClassName>`` -- any of captum's input-attribution classes by name
  (:class:`CaptumMethod`; e.g. ``captum:IntegratedGradients``, ``captum:Occlusion``,
  ``captum:DeepLift``, ``captum:GuidedBackprop``, ``captum:InputXGradient``; Kokhlikyan et al.,
  "Captum", arXiv:2009.07896), of the target logit, with the -100 dB floor (silence) as the
  baseline where the class takes one; constructor and ``attribute`` keyword arguments come from
  ``MethodOptions.method_args``. Layer and neuron methods and classes that do not fit the verb are
  refused by name (:func:`captum_class`).

* ``piq`` / ``l2i`` -- the learned interpreters of :mod:`audiointerp.learned` (PIQ: Paissan et
  al. 2023; L2I: Parekh et al., NeurIPS 2022), loaded from a checkpoint trained for this
  classifier. Their native output is a mask over the clip's log1p STFT
  (:meth:`LearnedMethod.native_mask`); ``attribute`` returns their real-valued map (PIQ: the
  decoder's mask logits; L2I: the relevance-weighted NMF ratio) carried to the feature grid,
  from which the 14 masks are built like for the other methods.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn as nn

from .errors import ConfigError, DatasetError, unknown_name
from .processing import FLOOR_DB, FeatureConfig, linear_to_feature_grid


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
        self.background = background.to(next(iter(self.model.parameters()), background).device)
        self.nsamples, self.seed = int(nsamples), int(seed)
        self._wrapper = _TargetLogit(self.model)
        self._explainer = shap.GradientExplainer(self._wrapper, self.background, batch_size=batch_size)

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
    kind = None  # the checkpoint kind (default: the method's name)

    def __init__(self, model: nn.Module, interpreter, classifier_checkpoint=None, features=None):
        from .errors import CheckpointError
        from .learned import load_interpreter

        super().__init__(model)
        if isinstance(interpreter, tuple):
            self.net, self.ckpt = interpreter
        else:
            self.net, self.ckpt = load_interpreter(interpreter, classifier_checkpoint, kind=self.kind or self.name)
        self.cfg = FeatureConfig.from_dict(self.ckpt["features"])
        if features is not None and features != self.cfg:
            raise CheckpointError(f"interpreter {self.ckpt.get('path')} was trained on features "
                                  f"{self.cfg.to_dict()}, not {features.to_dict()}")
        self._last = None

    def _raw(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The interpreter's ``(mask, map)`` over the log1p STFT, each ``[batch, n_fft//2+1, n_frames]``:
        PIQ and L2I read the classifier's ``cam_layer`` output."""
        from .learned import HiddenMap

        _, hidden = HiddenMap(self.model)(x)
        if tuple(hidden.shape[1:]) != tuple(self.net.hidden_shape):
            raise ConfigError(f"the classifier's hidden map is {tuple(hidden.shape[1:])} but the {self.name} "
                              f"interpreter was trained on {tuple(self.net.hidden_shape)} (another classifier "
                              f"or clip length)")
        return self.net.explain(hidden, target)

    def _explain(self, x, target):
        target = _check(x, target)
        last = self._last
        if last is not None and last[0] is x and torch.equal(last[1], target):
            return last[2]
        self.net.to(x.device)
        with torch.no_grad():
            mask, amap = self._raw(x, target)
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


class LMACMethod(LearnedMethod):
    """L-MAC (Paissan et al., "Listenable Maps for Audio Classifiers", ICML 2024): a decoder over
    several of the classifier's block outputs; mask = sigmoid of its logits, map = the logits
    (:func:`audiointerp.learned.lmac.lmac_explain`). The decoder is not conditioned on a class: it
    explains what the classifier predicts (the runner's target), and warns for another target.

    Raises:
        CheckpointError: as :class:`LearnedMethod`; a guided (FT) checkpoint loaded as plain L-MAC,
            or the reverse (named).
    """

    name = "lmac"
    kind = "lmac"

    def __init__(self, model: nn.Module, interpreter, classifier_checkpoint=None, features=None):
        from .errors import CheckpointError
        from .learned import lmac_variant

        super().__init__(model, interpreter, classifier_checkpoint, features)
        if lmac_variant(self.ckpt) != self.name:
            raise CheckpointError(f"{self.ckpt.get('path')} holds {lmac_variant(self.ckpt)}, not {self.name}: pass it "
                                  f"as the interpreter of method {lmac_variant(self.ckpt)!r}")

    def _raw(self, x, target):
        from .learned import lmac_explain

        return lmac_explain(self.net, self.model, x, target)


class LMACFTMethod(LMACMethod):
    """L-MAC FT: L-MAC after guided fine-tuning on mixtures (Paissan et al., ICML 2024)."""

    name = "lmac_ft"


# ---------------------------------------------------------------------------------------------
# LIME

#: quickshift's parameters in lime 0.2's ``LimeImageExplainer`` (its default segmentation)
LIME_QUICKSHIFT = {"kernel_size": 4, "max_dist": 200, "ratio": 0.2}
#: width of ``LimeImageExplainer``'s exponential kernel over cosine distances
LIME_KERNEL_WIDTH = 0.25
#: regularisation of LIME's Ridge surrogate (lime 0.2: ``Ridge(alpha=1, fit_intercept=True)``)
LIME_RIDGE_ALPHA = 1.0
#: LIME's segmentations: quickshift superpixels (the prior art) or a regular grid of patches
LIME_SEGMENTATIONS = ("quickshift", "grid")


def quickshift_segments(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Quickshift superpixels of one map, made as lime 0.2's ``LimeImageExplainer`` makes them.

    The map is min-max normalised to [0, 1] (a constant map gives zeros), made RGB
    (``skimage.color.gray2rgb``, as ``LimeImageExplainer`` does with a 2-D image) and segmented
    by ``skimage.segmentation.quickshift`` with :data:`LIME_QUICKSHIFT` (kernel_size 4,
    max_dist 200, ratio 0.2; quickshift's own Lab conversion kept) and ``rng=seed`` (Vedaldi &
    Soatto, "Quick Shift and Kernel Methods for Mode Seeking", ECCV 2008). About 0.4 s for a
    64 x 501 map on this CPU; 30-150 superpixels on real mel clips.

    Args:
        x: one map ``[F, T]`` (dB here; any units).
        seed: seed of quickshift's tie-breaking noise.

    Returns:
        int64 ``[F, T]`` on ``x``'s device, labels ``0 .. n-1``: every bin has exactly one label
        and every label is used.

    Raises:
        ConfigError: ``x`` is not 2-D.
    """
    from skimage.color import gray2rgb
    from skimage.segmentation import quickshift

    if x.dim() != 2:
        raise ConfigError(f"quickshift_segments expects one map [n_freq, n_frames], got {tuple(x.shape)}")
    a = x.detach().double().cpu().numpy()
    span = a.max() - a.min()
    img = (a - a.min()) / span if span > 0 else np.zeros_like(a)
    labels = quickshift(gray2rgb(img), rng=int(seed), **LIME_QUICKSHIFT)
    labels = np.unique(labels, return_inverse=True)[1].reshape(a.shape)  # 0 .. n-1, all used
    return torch.from_numpy(labels.astype(np.int64)).to(x.device)


def grid_segments(n_freq: int, n_frames: int, patch=(8, 50), device=None) -> torch.Tensor:
    """A regular time-frequency grid of patches as LIME's second segmentation.

    Patch ``(i, j)`` covers rows ``i*patch[0] .. (i+1)*patch[0]-1`` and frames
    ``j*patch[1] .. (j+1)*patch[1]-1`` (the last row / column of patches is cut by the map's
    edge); its label is ``i * n_cols + j`` with ``n_cols = ceil(n_frames / patch[1])``.

    Args:
        n_freq, n_frames: the map's size; patch: ``(frequency bins, frames)`` per patch.

    Returns:
        int64 ``[n_freq, n_frames]`` labels ``0 .. n-1``, each bin exactly one.

    Raises:
        ConfigError: ``patch`` is not two positive integers.
    """
    patch = _patch(patch)
    rows = torch.arange(n_freq, device=device) // patch[0]
    cols = torch.arange(n_frames, device=device) // patch[1]
    n_cols = -(-n_frames // patch[1])
    return rows[:, None] * n_cols + cols[None, :]


def _patch(patch) -> tuple[int, int]:
    try:
        p = tuple(patch)
        ok = len(p) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in p)
    except TypeError:
        ok = False
    if not ok:
        raise ConfigError(f"lime_grid must be two positive integers (frequency bins, frames) per patch, got {patch!r}")
    return int(p[0]), int(p[1])


def superpixel_means(x: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Each bin replaced by the mean of its superpixel (LIME's "off" value, ``hide_color=None``).

    Args:
        x: a map, any shape (dB); segments: int64 labels ``0 .. n-1`` of the same shape.

    Returns:
        a tensor shaped like ``x`` (same dtype): piecewise constant on the superpixels.
    """
    lab = segments.reshape(-1)
    n = int(lab.max()) + 1
    total = torch.zeros(n, dtype=torch.float64, device=x.device).index_add_(0, lab, x.reshape(-1).double())
    count = torch.bincount(lab, minlength=n).double()
    return (total / count.clamp_min(1))[lab].reshape(x.shape).to(x.dtype)


def _lime_samples(n: int, seed: int):
    """captum ``perturb_func`` (a generator) of LIME's ``n`` binary samples: the all-"on" sample
    first (as lime 0.2), then uniform draws from a generator seeded with ``seed``."""

    def samples(inputs, num_interp_features, **kwargs):
        draws = torch.randint(0, 2, (max(n - 1, 0), num_interp_features),
                              generator=torch.Generator().manual_seed(int(seed)))
        yield torch.ones(1, num_interp_features, device=inputs.device)
        for row in draws.to(device=inputs.device, dtype=inputs.dtype):
            yield row[None]

    return samples


class LimeMethod(Attribution):
    """LIME on the dB map as the prior art ran it (lime 0.2 ``LimeImageExplainer``; Ribeiro, Singh
    & Guestrin, "Why Should I Trust You?", KDD 2016), computed with captum's ``Lime``.

    Per clip: superpixels (:func:`quickshift_segments` of the min-max normalised map, or
    :func:`grid_segments`); ``nsamples`` binary samples ``z`` over the superpixels (the first all
    "on", the others uniform, seeded); in a sample, an "off" superpixel takes its mean dB value
    (:func:`superpixel_means`); each sample is weighted by ``sqrt(exp(-d^2 / 0.25^2))`` of the
    cosine distance ``d`` of ``z`` to the all-"on" sample (lime 0.2's kernel, which is captum's
    ``get_exp_kernel_similarity_function("cosine", 0.25)``); a Ridge surrogate (alpha 1, with
    intercept; captum ``SkLearnRidge``) is fitted to the softmax probability of the explained
    class. The map gives every bin its superpixel's surrogate weight (signed; probability per
    superpixel switched on).

    How captum runs it: captum's ``Lime`` explains ``z -> p(target | spectrogram of z)`` at the
    all-"on" ``z`` (``inputs`` = ones over the superpixels, ``baselines`` 0, one feature per
    superpixel: exactly LIME's interpretable space), and the forward function builds a whole batch
    of ``batch`` perturbed spectrograms in one gather. This is the superpixel ``feature_mask``
    applied inside the forward function rather than by captum sample by sample: captum's
    per-sample full-size transform costs about 1 ms a sample with one thread and up to 15 ms with
    two on a shared CPU (as much as a forward pass). Forward passes run, without gradients, through a BatchNorm-folded copy
    of the model (:func:`audiointerp.models.fuse_for_inference`, same outputs to 1e-6), so LIME
    costs its ``nsamples`` forward passes plus the segmentation (quickshift: about 0.4 s a mel
    clip); ``scripts/benchmark.py`` prints the ratio.

    Args:
        model: the classifier.
        nsamples: samples per clip, the original included (lime 0.2 and the prior art: 1000;
            ``scripts/lime_samples.py`` measures fewer).
        segmentation: ``quickshift`` (the prior art) or ``grid``.
        patch: ``(frequency bins, frames)`` of a grid patch (``grid`` only).
        batch: samples per forward pass (captum's ``perturbations_per_eval``); it changes the
            map by float rounding at most.
        seed: base seed; clip ``i`` of a call uses ``seed + seeds[i]`` (or ``seed + i``) for its
            quickshift and its samples, so its map does not depend on the batch it is in.

    Attributes:
        scorer: the BatchNorm-folded copy of the model that runs LIME's forward passes.

    Raises:
        ConfigError: ``nsamples`` < 2, ``batch`` < 1 (quoted), an unknown segmentation, a bad patch.
    """

    name = "lime"
    stochastic = True

    def __init__(self, model: nn.Module, nsamples: int = 1000, segmentation: str = "quickshift",
                 patch=(8, 50), batch: int = 50, seed: int = 0):
        from .models import fuse_for_inference

        super().__init__(model)
        for pname, v, low in (("lime_nsamples", nsamples, 2), ("lime_batch", batch, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ConfigError(f"{pname} must be an integer >= {low}, got {v!r}")
        if segmentation not in LIME_SEGMENTATIONS:
            raise unknown_name("LIME segmentation", segmentation, LIME_SEGMENTATIONS)
        self.nsamples, self.batch, self.seed = int(nsamples), int(batch), int(seed)
        self.segmentation, self.patch = segmentation, _patch(patch)
        self.scorer = fuse_for_inference(self.model)

    def segments(self, x: torch.Tensor, seeds=None) -> torch.Tensor:
        """The superpixels of each clip of ``x [batch, 1, F, T]``: int64 ``[batch, 1, F, T]``,
        labels ``0 .. n_clip-1`` (quickshift seeded with ``seed + seeds[i]``).

        Raises:
            ConfigError: ``x`` of another shape; ``seeds`` of another length than the batch.
        """
        if x.dim() != 4 or x.shape[1] != 1:
            raise ConfigError(f"segments expects x of shape [batch, 1, n_freq, n_frames], got {tuple(x.shape)}")
        seeds = _seeds(x, seeds)
        if self.segmentation == "grid":
            return grid_segments(*x.shape[2:], self.patch, device=x.device).expand(x.shape).clone()
        return torch.stack([quickshift_segments(x[i, 0], self.seed + seeds[i]) for i in range(len(x))])[:, None]

    def _forward(self, x1: torch.Tensor, seg: torch.Tensor):
        """``z [n, n_superpixels] -> softmax [n, n_classes]`` of the spectrograms of ``n`` samples
        (superpixel "on": ``x1``, "off": its mean), built in one gather."""
        off = superpixel_means(x1, seg)
        flat = seg.reshape(-1)

        def forward(z: torch.Tensor) -> torch.Tensor:
            on = (z > 0.5)[:, flat].view(len(z), *x1.shape[1:])
            x = torch.where(on, x1, off).contiguous(memory_format=torch.channels_last)
            return torch.softmax(self.scorer(x), dim=1)

        return forward

    def attribute(self, x, target, seeds=None):
        """``[batch, 1, F, T]`` float32: each bin its superpixel's Ridge weight (probability of the
        target class per superpixel switched on); ``seeds`` as in the class docstring."""
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr import Lime
        from captum.attr._core.lime import get_exp_kernel_similarity_function

        target = _check(x, target)
        seeds = _seeds(x, seeds)
        x = x.detach().float()
        seg = self.segments(x, seeds)
        out = torch.empty_like(x)
        for i in range(len(x)):
            n_super = int(seg[i].max()) + 1
            lime = Lime(self._forward(x[i:i + 1], seg[i]), interpretable_model=SkLearnRidge(alpha=LIME_RIDGE_ALPHA),
                        similarity_func=get_exp_kernel_similarity_function("cosine", LIME_KERNEL_WIDTH),
                        perturb_func=_lime_samples(self.nsamples, self.seed + seeds[i]))
            with torch.no_grad():
                w = lime.attribute(torch.ones(1, n_super, device=x.device), baselines=0.0, target=int(target[i]),
                                   n_samples=self.nsamples, perturbations_per_eval=self.batch,
                                   return_input_shape=False)
            out[i, 0] = w.reshape(-1).to(x)[seg[i, 0]]
        return out


# ---------------------------------------------------------------------------------------------
# Any captum attribution class by name

#: prefix of a captum class used as a method: ``captum:IntegratedGradients``
CAPTUM_PREFIX = "captum:"
#: captum classes whose maps depend on random draws (run clip by clip, seeded per clip)
CAPTUM_STOCHASTIC = ("GradientShap", "KernelShap", "Lime", "ShapleyValueSampling")
#: captum classes that take a model but do not fit ``attribute(x, target, seeds)``, and why
CAPTUM_UNFIT = {
    "FeaturePermutation": "it permutes features across the clips of a batch, so a clip's map depends on its batch",
    "LimeBase": "it needs an interpretable model and sampling functions; use the method 'lime' (LIME as the prior "
                "art ran it) or 'captum:Lime'",
}
#: ``attribute`` arguments set by audiointerp, never by ``method_args``
_CAPTUM_RESERVED = ("inputs", "target", "additional_forward_args", "return_convergence_delta", "return_input_shape")
#: classes whose ``baselines`` must be a distribution (two or more), not one level
_CAPTUM_BASELINE_DISTRIBUTION = ("DeepLiftShap",)
#: window arguments that may be given as (frequency bins, frames); the channel axis 1 is added
_CAPTUM_WINDOWS = ("sliding_window_shapes", "strides")


def _captum_unfit(cls) -> str | None:
    """Why captum class ``cls`` does not fit the verb, or None when it fits."""
    import captum.attr as ca

    if not callable(getattr(cls, "attribute", None)) or cls in (ca.Attribution, ca.GradientAttribution,
                                                                ca.PerturbationAttribution):
        return "it is an abstract base class"
    if cls.__name__ in CAPTUM_UNFIT:
        return CAPTUM_UNFIT[cls.__name__]
    init = list(inspect.signature(cls.__init__).parameters.values())[1:]
    attr = inspect.signature(cls.attribute).parameters
    if (issubclass(cls, (ca.LayerAttribution, ca.NeuronAttribution)) or "layer" in [p.name for p in init]
            or "neuron_selector" in attr):
        return ("it is a layer or neuron method: it needs a layer and attributes to that layer's units, not to the "
                "input map (use 'gradcam' for Grad-CAM)")
    if not init or init[0].name not in ("forward_func", "model"):
        return f"it wraps another attribution method ({init[0].name if init else 'no model'}), not a model"
    if "target" not in attr:
        return "it explains no target class"
    return None


def captum_classes() -> list[str]:
    """Names of captum's attribution classes (``captum.attr``) that fit ``captum:<ClassName>``."""
    import captum.attr as ca

    return sorted(n for n in dir(ca) if isinstance(getattr(ca, n), type) and issubclass(getattr(ca, n), ca.Attribution)
                  and _captum_unfit(getattr(ca, n)) is None)


def captum_class(name: str) -> type:
    """The captum attribution class of method ``captum:<ClassName>`` (or of ``<ClassName>``).

    Raises:
        ConfigError: not a class of ``captum.attr`` (lists the classes that fit), or a class that
            does not fit ``attribute(x, target, seeds)`` (layer and neuron methods, wrappers of other
            methods, abstract classes, :data:`CAPTUM_UNFIT`), with the reason.
    """
    import captum.attr as ca

    cname = name[len(CAPTUM_PREFIX):] if name.startswith(CAPTUM_PREFIX) else name
    cls = getattr(ca, cname, None)
    if not (isinstance(cls, type) and issubclass(cls, ca.Attribution)):
        raise ConfigError(f"unknown captum attribution class {cname!r} in method {CAPTUM_PREFIX + cname!r}; "
                          f"classes that fit: {', '.join(captum_classes())}")
    why = _captum_unfit(cls)
    if why:
        raise ConfigError(f"method {CAPTUM_PREFIX + cname!r} does not fit attribute(x, target): {why}")
    return cls


def _captum_value(key: str, v):
    """``method_args`` values as captum takes them: lists become tuples; a 2-entry window gets
    the channel axis; ``baselines`` numbers stay dB levels (a list: one constant map each)."""
    if key == "baselines" and not isinstance(v, torch.Tensor):
        levels = [v] if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else v
        try:
            return tuple(float(level) for level in levels)
        except (TypeError, ValueError):
            raise ConfigError(f"method_args['baselines'] must be a dB level, a list of dB levels or a tensor, "
                              f"got {v!r}") from None
    if isinstance(v, list):
        v = tuple(v)
    if key in _CAPTUM_WINDOWS and isinstance(v, tuple) and len(v) == 2:
        v = (1, *v)
    return v


class CaptumMethod(Attribution):
    """Any of captum's input-attribution classes by name (``captum:<ClassName>``), behind the verb
    (Kokhlikyan et al., "Captum: A unified and generic model interpretability library for PyTorch",
    arXiv:2009.07896; each class cites its own paper, e.g. IntegratedGradients: Sundararajan et al.,
    ICML 2017; Occlusion: Zeiler & Fergus, ECCV 2014; DeepLift: Shrikumar et al., ICML 2017;
    GuidedBackprop: Springenberg et al., ICLR workshop 2015; InputXGradient: Shrikumar et al., 2016).

    The map explains the target class's logit (as ``saliency``). ``baselines``, where the class
    takes them, default to the -100 dB floor (silence), given as a constant map; a dB level or a
    list of levels (one constant map each: a distribution, as GradientShap and DeepLiftShap take)
    may be passed instead. Gradient classes run on the model with gradients; perturbation classes
    (Occlusion, FeatureAblation, ShapleyValueSampling, KernelShap, Lime) without, on a
    BatchNorm-folded copy (:func:`audiointerp.models.fuse_for_inference`, same outputs to 1e-6), with
    ``perturbations_per_eval`` = ``batch`` unless ``method_args`` sets it. Stochastic classes
    (:data:`CAPTUM_STOCHASTIC`) run clip by clip under torch's and numpy's global RNGs seeded with
    ``seed + seeds[i]`` (both restored afterwards), so a clip's map does not depend on its batch;
    the others run on the whole batch.

    Args:
        model: the classifier.
        name: ``captum:<ClassName>`` or ``<ClassName>`` (:func:`captum_class`).
        method_args: keyword arguments of the class's constructor and of its ``attribute``, in one
            dict, each sent where captum names it (e.g. ``{"n_steps": 32}`` for IntegratedGradients,
            ``{"sliding_window_shapes": (8, 25), "strides": (4, 10)}`` for Occlusion -- windows may
            be ``(frequency bins, frames)``, the channel axis is added --, ``{"multiply_by_inputs":
            False}`` for DeepLift's constructor). Lists become tuples (JSON-friendly).
        seed: base seed of stochastic classes.
        batch: default ``perturbations_per_eval`` of perturbation classes.

    Raises:
        ConfigError: unknown or unfit class (:func:`captum_class`); an argument neither the
            constructor nor ``attribute`` takes, one audiointerp sets (``inputs``, ``target``,
            ``additional_forward_args``, ``return_convergence_delta``, ``return_input_shape``), a
            required argument missing (e.g. Occlusion's ``sliding_window_shapes``), a bad baseline,
            or a constructor that refuses its arguments -- each naming the class and the argument.
    """

    def __init__(self, model: nn.Module, name: str, method_args: dict | None = None, seed: int = 0, batch: int = 50):
        import captum.attr as ca

        from .models import fuse_for_inference

        super().__init__(model)
        self.cls = captum_class(name)
        self.name = CAPTUM_PREFIX + self.cls.__name__
        self.stochastic = self.cls.__name__ in CAPTUM_STOCHASTIC
        self.seed = int(seed)
        self.gradient = issubclass(self.cls, ca.GradientAttribution)
        args = {} if method_args is None else method_args
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            raise ConfigError(f"method_args of {self.name} must be a dict of keyword arguments, got {args!r}")
        init = list(inspect.signature(self.cls.__init__).parameters.values())[2:]
        attr = list(inspect.signature(self.cls.attribute).parameters.values())[1:]
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        init_names = {p.name for p in init if p.kind in named}
        attr_names = {p.name for p in attr if p.kind in named} - set(_CAPTUM_RESERVED)
        self.init_args, self.attr_args = {}, {}
        for k, v in args.items():
            if k in _CAPTUM_RESERVED:
                raise ConfigError(f"method_args[{k!r}] of {self.name} is set by audiointerp, not by method_args")
            if k in init_names and k in attr_names:
                raise ConfigError(f"method_args[{k!r}] of {self.name} is ambiguous (constructor and attribute)")
            if k not in init_names | attr_names:
                raise ConfigError(f"unsupported argument {k!r} for {self.name}; its arguments: "
                                  f"{', '.join(sorted(init_names | attr_names)) or 'none'}")
            (self.init_args if k in init_names else self.attr_args)[k] = _captum_value(k, v)
        if "baselines" in attr_names:
            self.attr_args.setdefault("baselines", (FLOOR_DB,))
            base = self.attr_args["baselines"]
            if (self.cls.__name__ in _CAPTUM_BASELINE_DISTRIBUTION and isinstance(base, tuple) and len(base) < 2):
                raise ConfigError(f"{self.name} needs a distribution of baselines: pass method_args['baselines'] as "
                                  f"a list of two or more dB levels, e.g. [-100, -80]")
        if "perturbations_per_eval" in attr_names and not self.gradient:
            self.attr_args.setdefault("perturbations_per_eval", int(batch))
        missing = [p.name for p in init + attr if p.default is p.empty and p.kind in named
                   and p.name not in self.init_args and p.name not in self.attr_args and p.name not in _CAPTUM_RESERVED]
        if missing:
            raise ConfigError(f"{self.name} needs {', '.join(map(repr, missing))} in method_args")
        self._forward = self.model if self.gradient else fuse_for_inference(self.model)
        try:
            self._impl = self.cls(self._forward, **self.init_args)
        except (TypeError, ValueError, AssertionError) as exc:
            raise ConfigError(f"{self.name} refused its constructor arguments {self.init_args}: {exc}") from None

    def _baselines(self, x: torch.Tensor):
        base = self.attr_args.get("baselines")
        if isinstance(base, tuple):  # dB levels: one constant map each
            return torch.tensor(base, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1).expand(
                len(base), *x.shape[1:]).contiguous()
        return base

    def _run(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kw = dict(self.attr_args)
        if "baselines" in kw:
            kw["baselines"] = self._baselines(x)
        if self.gradient:
            with torch.enable_grad():
                a = self._impl.attribute(x.detach().clone().requires_grad_(True), target=target, **kw)
        else:
            with torch.no_grad():
                a = self._impl.attribute(x.detach(), target=target, **kw)
        a = a[0] if isinstance(a, tuple) else a
        return a.detach().float().reshape(x.shape)

    def attribute(self, x, target, seeds=None):
        """``[batch, 1, F, T]`` float32: the class's attribution of the target logit (units as the
        class defines them, e.g. logit for IntegratedGradients and Occlusion, logit per dB for
        Saliency); ``seeds`` seed stochastic classes per clip (see the class docstring)."""
        target = _check(x, target)
        if not self.stochastic:
            return self._run(x, target)
        seeds = _seeds(x, seeds)
        out = []
        np_state = np.random.get_state()  # captum's GradientShap also draws from numpy's global RNG
        try:
            for i in range(len(x)):
                with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
                    torch.manual_seed(self.seed + seeds[i])
                    np.random.seed((self.seed + seeds[i]) % 2 ** 32)
                    out.append(self._run(x[i:i + 1], target[i:i + 1]))
        finally:
            np.random.set_state(np_state)
        return torch.cat(out)


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
        lime_nsamples: LIME's samples per clip, the original included (1000: lime 0.2 and the
            prior art; forward passes per clip).
        lime_segmentation: LIME's superpixels, ``quickshift`` (the prior art) or ``grid``.
        lime_grid: ``(frequency bins, frames)`` of a LIME grid patch (``grid`` only).
        lime_batch: LIME's samples per forward pass; also the default ``perturbations_per_eval``
            of captum's perturbation classes. Changes maps by float rounding at most.
        method_args: keyword arguments of a ``captum:<ClassName>`` method's constructor and
            ``attribute``, in one dict (:class:`CaptumMethod`); e.g. ``{"n_steps": 32}`` or
            ``{"sliding_window_shapes": [8, 25], "strides": [4, 10]}``; ``baselines`` default to
            -100 dB. Other methods ignore it.
        train_folds: the training folds SHAP's background comes from (None: ESC-50's 1-3).
        metadata: the dataset's csv under ``meta/`` (None: ``esc50.csv``).
    """

    features: FeatureConfig | None = None
    checkpoint: str | None = None
    root: str | None = None
    seed: int = 0
    shap_nsamples: int = 32
    shap_background_per_class: int = 2
    background: torch.Tensor | None = field(default=None, repr=False)
    interpreter: object = None
    lime_nsamples: int = 1000
    lime_segmentation: str = "quickshift"
    lime_grid: tuple = (8, 50)
    lime_batch: int = 50
    method_args: dict = field(default_factory=dict)
    train_folds: tuple | None = None
    metadata: str | None = None


def _saliency(model, o: MethodOptions) -> Attribution:
    return SaliencyMethod(model)


def _gradcam(model, o: MethodOptions) -> Attribution:
    return GradCAMMethod(model)


def _shap(model, o: MethodOptions) -> Attribution:
    bg = o.background
    if bg is None:
        if o.features is None:
            raise ConfigError("SHAP needs the classifier's feature configuration (features=) for its background")
        bg = shap_background(o.root, o.features, o.shap_background_per_class, o.seed, folds=o.train_folds,
                             metadata=o.metadata)
    return SHAPMethod(model, bg, nsamples=o.shap_nsamples, seed=o.seed)


def _lime(model, o: MethodOptions) -> Attribution:
    return LimeMethod(model, nsamples=o.lime_nsamples, segmentation=o.lime_segmentation, patch=o.lime_grid,
                      batch=o.lime_batch, seed=o.seed)


def _learned(cls):
    def build(model, o: MethodOptions) -> Attribution:
        from .learned import default_interpreter_path

        if o.interpreter is None and o.checkpoint is None:
            raise ConfigError(f"{cls.name} needs the classifier's checkpoint= or its interpreter= checkpoint")
        interp = o.interpreter if o.interpreter is not None else default_interpreter_path(o.checkpoint, cls.name)
        return cls(model, interp, classifier_checkpoint=o.checkpoint, features=o.features)
    return build


#: name -> builder ``(model, MethodOptions) -> Attribution``, in table order.
#: Besides these, any fitting captum class by name: ``captum:<ClassName>`` (:class:`CaptumMethod`).
METHODS = {"saliency": _saliency, "gradcam": _gradcam, "shap": _shap, "lime": _lime, "piq": _learned(PIQMethod),
           "l2i": _learned(L2IMethod), "lmac": _learned(LMACMethod), "lmac_ft": _learned(LMACFTMethod)}
#: methods that load a trained interpreter checkpoint (``<method>_<classifier stem>.pt`` by default);
#: each also has a mask of its own (:class:`NativeMask`)
LEARNED = ("piq", "l2i", "lmac", "lmac_ft")


def check_method(name: str) -> str:
    """Return ``name`` if it is a method of :data:`METHODS` or a fitting ``captum:<ClassName>``.

    Raises:
        ConfigError: an unknown name (lists the methods and the ``captum:<ClassName>`` form), or a
            captum class that is unknown or does not fit (:func:`captum_class`).
    """
    if isinstance(name, str) and name.startswith(CAPTUM_PREFIX):
        captum_class(name)
        return name
    if name not in METHODS:
        raise unknown_name("method", name, [*METHODS, CAPTUM_PREFIX + "<ClassName>"])
    return name


def make_method(name: str, model: nn.Module, **options) -> Attribution:
    """Build attribution method ``name`` for ``model``: the one factory of every method.

    Args:
        name: a key of :data:`METHODS` (``saliency``, ``gradcam``, ``shap``, ``lime``, ``piq``,
            ``l2i``, ``lmac``, ``lmac_ft``) or ``captum:<ClassName>`` (:class:`CaptumMethod`, e.g.
            ``captum:IntegratedGradients``).
        model: the classifier (eval mode).
        options: fields of :class:`MethodOptions` (e.g. ``features``, ``checkpoint``, ``root``,
            ``seed``, ``shap_nsamples``, ``interpreter``, ``lime_nsamples``, ``method_args``); each
            method uses what it needs.

    Raises:
        ConfigError: unknown method or option (lists the valid ones); SHAP without features or a
            background; bad LIME options; an unknown or unfit captum class, or ``method_args`` it
            does not take (:class:`CaptumMethod`).
        DatasetError: SHAP's background needs the training folds, and they have no clips.
        CheckpointError: a learned method's interpreter is missing or was trained for another
            classifier.
    """
    check_method(name)
    valid = {f.name for f in fields(MethodOptions)}
    for k in options:
        if k not in valid:
            raise unknown_name("method option", k, valid)
    o = MethodOptions(**options)
    if name.startswith(CAPTUM_PREFIX):
        return CaptumMethod(model, name, o.method_args, seed=o.seed, batch=o.lime_batch)
    return METHODS[name](model, o)


def stratified_background(labels: np.ndarray, per_class: int = 2, seed: int = 0) -> np.ndarray:
    """Indices of ``per_class`` clips of each class (seeded), sorted; labels int ``[n]``."""
    rng = np.random.default_rng(seed)
    idx = [rng.choice(np.flatnonzero(labels == c), size=min(per_class, int((labels == c).sum())), replace=False)
           for c in np.unique(labels)]
    return np.sort(np.concatenate(idx))


def shap_background(root, fcfg: FeatureConfig, per_class: int = 2, seed: int = 0, folds=None,
                    progress: bool = False, metadata: str | None = None) -> torch.Tensor:
    """SHAP's background: ``per_class`` seeded clips of every class of the training folds (1-3),
    as features ``[n_bg, 1, F, T]`` (dB) from the feature cache
    (:func:`stratified_background`, :func:`audiointerp.data.fold_features`).

    Raises:
        DatasetError: the training folds hold no clips (named), or the dataset root is wrong.
    """
    from .data import ESC50, TRAIN_FOLDS, fold_features

    folds = TRAIN_FOLDS if folds is None else tuple(folds)
    try:
        tr = ESC50(root, folds, fcfg.sample_rate, fcfg.duration, metadata=metadata)
    except DatasetError as exc:
        raise DatasetError(f"SHAP's background comes from the training folds {list(folds)}: {exc}") from None
    if len(tr) == 0:
        raise DatasetError(f"SHAP's background comes from the training folds {list(folds)}, which hold no clips")
    bg_idx = stratified_background(tr.labels, per_class, seed)
    return fold_features(tr, fcfg, progress=progress)[torch.from_numpy(bg_idx)]
