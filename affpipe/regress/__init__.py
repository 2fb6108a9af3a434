"""Sequence regression of valence and arousal from per-frame CNN features (DFM paper §4).

* :mod:`affpipe.regress.models` -- the regressor registry (:data:`~affpipe.regress.models.REGRESSORS`):
  ``bgru`` (bidirectional GRU) and ``cnn``/``none`` (the per-frame CNN's own predictions).
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
"""
