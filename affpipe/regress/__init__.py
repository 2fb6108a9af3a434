"""Sequence regression of valence and arousal from per-frame CNN features (DFM paper §4).

* :mod:`affpipe.regress.registry` -- the regressor registry (:data:`~affpipe.regress.registry.REGRESSORS`),
  a torch-free leaf; :mod:`affpipe.regress.regressors` registers every regressor (imported below, so the
  registry is complete once this package is imported, still without torch: model code loads on first use).
* :mod:`affpipe.regress.bgru` -- the DFM paper's bidirectional GRU (``bgru``).
* :mod:`affpipe.regress.sequences` -- segments at long feature gaps, fixed-length windows, overlap
  averaging (pure functions).
* :mod:`affpipe.regress.fill` -- a prediction for every frame: the documented fill rules (pure).
* :mod:`affpipe.regress.data` -- reading the manifest, labels and features stores (bounded memory).
* :mod:`affpipe.regress.train` -- the generic trainer: masked MSE, SGD with time-based decay, devel
  selection, early stopping, resumable deterministic checkpoints, windowed inference.
* :mod:`affpipe.regress.losses` -- the masked training losses (MSE; 1 - mean CCC).
* :mod:`affpipe.regress.postprocess` -- median filtering of each video's predictions (pure).
* :mod:`affpipe.regress.multilevel` -- Kollias & Zafeiriou's multi-level CNN-RNN on the stored CNN taps.
* :mod:`affpipe.regress.experiment` -- one experiment end to end -> ``predictions.parquet``.
* :mod:`affpipe.regress.predictions` -- the ``predictions.parquet`` artifact: format, writer and the
  one reader (used by ``evaluate`` and ``regression-report``).
"""

from affpipe.regress import regressors  # noqa: E402,F401 - registers the regressors (torch-free)
