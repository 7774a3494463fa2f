"""Learned interpreters: L2I, PIQ and L-MAC, trained on a frozen classifier's hidden feature maps.

L2I and PIQ read the classifier's last convolutional feature map ``model.cam_layer`` (captured
with a forward hook, :class:`HiddenMap`), ``[batch, channels, F', T']``; L-MAC reads several of
its blocks (:class:`HiddenMaps`). All produce a mask over the clip's log1p-magnitude STFT
``L = log(1 + |STFT|)`` ``[batch, n_fft//2+1, n_frames]`` at the classifier's own STFT. The
interpretation is listenable: ``ISTFT(expm1(M ⊙ L) · e^{iφ})`` with the clip's own phase φ
(:func:`audiointerp.masks.apply_log1p_mask`, :func:`audiointerp.processing.inverse_log1p_stft`).

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
* **L-MAC** (Paissan, Ravanelli, Subakan, "Listenable Maps for Audio Classifiers", ICML 2024;
  SpeechBrain's ESC-50 recipe). A decoder fuses several classifier blocks by addition after
  transposed convolutions → sigmoid mask M over L. The masked-in ``expm1(M ⊙ L)`` and masked-out
  ``expm1((1 − M) ⊙ L)`` go through the frozen classifier. Loss:
  ``4·CE(f(x_in), c) − 0.2·CE(f(x_out), c) + 6.4·mean|M|`` (c: the prediction; 6.4 = the
  reference's 0.4 summed over its batch of 16, as a per-item mean). L-MAC FT (guided fine-tuning)
  adds ``4·BCE(M, 1[L_clean ≥ 0.35·max L_clean])`` on mixtures for items whose masked mixture
  correlates with the clean clip at ≥ 0.6. :func:`lmac_explain` is its attribution entry point;
  training is resumable (:func:`train_lmac`).

Against the reference implementations' bugs: the classifier's softmax is applied once (to
its logits, as θ's target; θ's own logits go to ``cross_entropy``); the checkpoint kept is the
epoch with the lowest validation loss (fold 4), not the last; decoders reach the exact
number of STFT frames by explicit interpolation (:func:`match_size`: no frame dropped or
padded silently); the classifier is frozen and never in the optimiser.

Checkpoints (``audiointerp-interpreter/1``) carry the interpreter's constructor arguments,
the classifier's file SHA-256 and feature configuration, the NMF dictionary (L2I), the
training configuration and per-epoch history; :func:`load_interpreter` refuses a checkpoint
of another classifier.

Layout: :mod:`~audiointerp.learned.base` (hidden maps, exact sizes), :mod:`~audiointerp.learned.l2i`,
:mod:`~audiointerp.learned.piq`, :mod:`~audiointerp.learned.lmac`, :mod:`~audiointerp.learned.checkpoints`
(save, load, cards) and :mod:`~audiointerp.learned.training`.
"""

from .base import HiddenMap, HiddenMaps, conv_block_names, default_lmac_layers, match_size
from .checkpoints import (
                          INTERPRETER_FORMAT,
                          INTERPRETERS,
                          KINDS,
                          build_interpreter,
                          default_interpreter_path,
                          interpreter_args,
                          interpreter_card,
                          lmac_variant,
                          load_interpreter,
                          read_interpreter,
                          save_interpreter,
)
from .l2i import L2IInterpreter
from .lmac import (
                          LMACInterpreter,
                          draw_partners,
                          guidance_correlation,
                          guidance_target,
                          listenable,
                          lmac_explain,
                          magnitude_classifier,
                          mix_with_partners,
)
from .piq import PIQInterpreter, energy_target
from .training import (
                          InterpreterData,
                          InterpreterTrainConfig,
                          LMACData,
                          LMACTrainConfig,
                          fit_interpreter,
                          fit_lmac,
                          interpreter_data,
                          lmac_data,
                          lmac_mixture_data,
                          new_interpreter,
                          train_interpreter,
                          train_lmac,
)

__all__ = ["HiddenMap", "HiddenMaps", "conv_block_names", "default_lmac_layers", "match_size", "INTERPRETER_FORMAT",
           "INTERPRETERS", "KINDS", "build_interpreter", "default_interpreter_path", "interpreter_args",
           "interpreter_card", "lmac_variant", "load_interpreter", "read_interpreter", "save_interpreter",
           "L2IInterpreter", "PIQInterpreter", "energy_target", "LMACInterpreter", "draw_partners",
           "guidance_correlation", "guidance_target", "listenable", "lmac_explain", "magnitude_classifier",
           "mix_with_partners", "InterpreterData", "InterpreterTrainConfig", "LMACData", "LMACTrainConfig",
           "fit_interpreter", "fit_lmac", "interpreter_data", "lmac_data", "lmac_mixture_data", "new_interpreter",
           "train_interpreter", "train_lmac"]
