"""audiointerp: post-hoc interpretation of ESC-50 audio classifiers.

Modules: :mod:`~audiointerp.data` (ESC-50), :mod:`~audiointerp.processing` (log-STFT/log-mel
and inversion), :mod:`~audiointerp.models`, :mod:`~audiointerp.fit`,
:mod:`~audiointerp.interpret` (Saliency, Grad-CAM, SHAP), :mod:`~audiointerp.masks`,
:mod:`~audiointerp.metrics`, :mod:`~audiointerp.runner`, :mod:`~audiointerp.tables`.
"""

__version__ = "0.1.0"
