"""audiointerp: post-hoc interpretation of ESC-50 audio classifiers.

The layers, lowest first (a module imports only from its own layer or lower ones):

1. foundations: :mod:`~audiointerp.errors`, :mod:`~audiointerp.settings` (the environment
   variables), :mod:`~audiointerp.config` (dataclass -> command-line options),
   :mod:`~audiointerp.provenance`, :mod:`~audiointerp.metrics` (FF, AI, AD, AG, FidIn, SPS, COMP);
2. data and features: :mod:`~audiointerp.audio_io`, :mod:`~audiointerp.data` (ESC-50, content
   digests, the feature cache), :mod:`~audiointerp.processing` (log-STFT / log-mel / log1p STFT
   and their inverses), :mod:`~audiointerp.noise` (listening conditions); the result logs
   (:mod:`~audiointerp.results_io`), statistics (:mod:`~audiointerp.stats`) and table rendering
   (:mod:`~audiointerp.render`);
3. classifiers: :mod:`~audiointerp.models`, :mod:`~audiointerp.fit`, :mod:`~audiointerp.evaluate`,
   :mod:`~audiointerp.nmf`;
4. attribution: :mod:`~audiointerp.interpret` (one factory, one verb), :mod:`~audiointerp.learned`
   (L2I, PIQ);
5. masks: :mod:`~audiointerp.masks`;
6. scoring: :mod:`~audiointerp.scoring` (mask, re-synthesise, score in both domains);
7. orchestration, thin siblings over scoring: :mod:`~audiointerp.runner` (a fold, logged),
   :mod:`~audiointerp.explore` (one clip), :mod:`~audiointerp.overlap` (mixtures);
8. :mod:`~audiointerp.tables`, :mod:`~audiointerp.figures` and the command line
   (``python -m audiointerp``).
"""

__version__ = "0.1.0"
