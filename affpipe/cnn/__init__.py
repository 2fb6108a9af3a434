"""Per-frame CNNs: backbones, input representations, HDF5 data loading, training and feature extraction.

* :mod:`affpipe.cnn.backbones` -- the backbone factory (:func:`create_backbone`, ``vgg16`` and
  ``small``), the regression head, the one- or two-branch :class:`PerFrameRegressor` and loading of
  user-supplied weights.
* :mod:`affpipe.cnn.inputs` -- which stored datasets make up each input (``sfa`` ... ``mdr``,
  ``dfa+dfs``) and their documented mapping to network input.
* :mod:`affpipe.cnn.data` -- the frame index over a dataset's stores and labels, and the
  bounded-memory HDF5 :class:`~torch.utils.data.Dataset`.
* :mod:`affpipe.cnn.train` -- seeded, resumable training with model selection on devel.
* :mod:`affpipe.cnn.extract` -- features and per-frame predictions of one video.
"""
