"""Multi-level CNN-RNN (Kollias & Zafeiriou, CNN-3RNN-2nd-pool_last-pool_fc) over stored CNN taps.

The paper's network (§5.3.1, Fig. 5-6): a VGG-Face CNN whose 2nd pooling layer (low level), last
pooling layer (high level) and fully connected layer (fc) each feed their own 2-layer GRU of 128
units; the three GRU outputs are concatenated and one output layer gives (valence, arousal) per
frame. The 68 aligned landmarks are concatenated with the last pooling layer's output before the fc
layer. Loss ``1 - (CCC_v + CCC_a) / 2``; sequences of 80 frames, batch 4; median filter of the
per-frame predictions (81 frames for valence, 3 for arousal).

How this maps onto affpipe (the CNN is the frozen per-frame CNN of :mod:`affpipe.cnn`, the paper's
"CNN parts fixed" variant; its taps are stored by ``cnn-features`` with ``cnn.store_taps``):

* **Taps.** ``low`` = dataset ``tap_low`` (2nd pool, global-average-pooled: NOTES decision),
  ``high`` = ``tap_high`` (last pool, global-average-pooled: our decision, a flattened 7x7x512 map is
  25088 values per frame), ``fc`` = ``features`` (VGG-16 fc6). The trainer sees their columns
  concatenated per row (:class:`affpipe.regress.data.FeatureSource`, standardised per column with the
  train statistics like every input) and :class:`MultiLevelGRU` splits them again by name.
* **Landmarks** (optional, ``landmarks``): the stored fc tap comes from a CNN trained without
  landmarks, so they cannot enter before the frozen fc layer. They join the fc level instead: the
  fc-level GRU's input is ``[fc ; 136 landmark coordinates]``, whose input transform is the learnt
  linear map the paper's fc layer would apply to them. They reach only the fc-level GRU, as in the
  paper (the low and high taps are taken before the concatenation).
* **GRUs** are unidirectional (the paper says GRU, not bidirectional), packed so padding is never
  seen. Dropout "with 0.8 probability value ... after the first GRU layer" (§6.1) is read as the
  TensorFlow keep probability 0.8, i.e. a drop rate of 0.2 between the two GRU layers.
* **Per-frame outputs.** The paper's OMG labels are per utterance, so it averages/medians the
  per-frame outputs of a sequence; affpipe's labels are per frame, so every frame's output is scored.
* **Training** reuses the generic trainer (:func:`affpipe.regress.train.fit_sequence_model`: windows,
  devel selection, resumable checkpoints) with ``loss: ccc``; this regressor's own training values
  (``seq_len`` 80, ``batch_size`` 4, ``lr`` 1e-3 -- the paper's rate with the CNN fixed --, Adam,
  the CCC loss, the median filter) replace the top-level ``regression`` keys of the same name
  (:func:`prepare_settings`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from affpipe.errors import ConfigError
from affpipe.regress.data import LANDMARKS_INPUT, VideoData

# What the regressor reads and the settings it trains with are torch-free (the DAG build asks them):
# they live with its registration in affpipe.regress.regressors.
from affpipe.regress.regressors import (
    MULTILEVEL_LANDMARK_TAP as LANDMARK_TAP,
    MULTILEVEL_KEY as SETTINGS_KEY,
    MULTILEVEL_TAP_SOURCES as TAP_SOURCES,
    MULTILEVEL_TRAINING_OVERRIDES as TRAINING_OVERRIDES,
    multilevel_inputs as input_datasets,
    multilevel_settings as prepare_settings,
)  # noqa: F401 - part of this module's API

#: Output columns (valence, arousal).
N_OUTPUTS = 2


def _hp(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    return settings[SETTINGS_KEY]


class MultiLevelGRU(nn.Module):
    """One GRU stack per CNN tap, outputs concatenated, a linear per-frame (valence, arousal) head.

    Parameters
    ----------
    groups : sequence of (str, int)
        Column groups of the input rows, in order (``(dataset, width)``, as
        :attr:`affpipe.regress.data.FeatureSource.groups`): ``tap_low``, ``tap_high``, ``features``
        and optionally ``landmarks``.
    taps : sequence of str
        Taps with their own GRU, a subset of ``low``, ``high``, ``fc`` (the paper: all three).
    units : int
        Units per GRU layer (the paper 128).
    layers : int
        Stacked GRU layers per tap (the paper 2).
    dropout : float
        Dropout between the stacked GRU layers (after the first; see the module docstring).

    Notes
    -----
    ``forward(x, lengths)``: ``x`` (B, L, D) zero-padded, D = the sum of the group widths, and the
    true lengths (B,); returns (B, L, 2); rows beyond a sequence's length are the head's bias
    (never scored: the trainer masks them).
    """

    def __init__(self, groups: Sequence[tuple[str, int]], *, taps: Sequence[str] = ("low", "high", "fc"),
                 units: int = 128, layers: int = 2, dropout: float = 0.2):
        super().__init__()
        offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for name, width in groups:
            if name in offsets:
                raise ValueError(f"column group {name!r} appears twice in {list(groups)}")
            offsets[name] = (start, start + int(width))
            start += int(width)
        self.input_dim = start
        self.taps = tuple(t for t in TAP_SOURCES if t in taps)
        unknown = sorted(set(taps) - set(TAP_SOURCES))
        if unknown or not self.taps:
            raise ValueError(f"taps must be a non-empty subset of {tuple(TAP_SOURCES)}, got {tuple(taps)}")
        self.grus = nn.ModuleDict()
        for tap in self.taps:
            sources = [TAP_SOURCES[tap]] + ([LANDMARKS_INPUT] if tap == LANDMARK_TAP and LANDMARKS_INPUT in offsets else [])
            missing = [s for s in sources if s not in offsets]
            if missing:
                raise ValueError(f"tap {tap!r} needs the column group(s) {missing}; the input has {list(offsets)}")
            idx = torch.cat([torch.arange(*offsets[s]) for s in sources])
            self.register_buffer(f"cols_{tap}", idx, persistent=False)
            self.grus[tap] = nn.GRU(input_size=int(idx.numel()), hidden_size=units, num_layers=layers,
                                    batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(units * len(self.taps), N_OUTPUTS)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"expected {self.input_dim} input columns, got {x.shape[-1]}")
        total = x.shape[1]
        lens = lengths.detach().to("cpu", torch.int64)
        outs = []
        for tap in self.taps:
            xi = x.index_select(-1, getattr(self, f"cols_{tap}"))
            packed = pack_padded_sequence(xi, lens, batch_first=True, enforce_sorted=False)
            h, _ = self.grus[tap](packed)
            h, _ = pad_packed_sequence(h, batch_first=True, total_length=total)
            outs.append(h)
        return self.head(torch.cat(outs, dim=-1))


def build(groups: Sequence[tuple[str, int]], settings: Mapping[str, Any]) -> MultiLevelGRU:
    """The model for inputs with column ``groups`` and the validated ``regression`` settings."""
    hp = _hp(settings)
    return MultiLevelGRU(groups, taps=hp["taps"], units=int(hp["gru_units"]), layers=int(hp["gru_layers"]),
                         dropout=float(hp["dropout"]))


def rebuild(input_dim: int, groups: Sequence[Sequence[Any]], settings: Mapping[str, Any]) -> MultiLevelGRU:
    """The untrained model of a saved one (``model.pt`` records the column groups it was trained on)."""
    groups = [(str(name), int(width)) for name, width in groups]
    if sum(w for _, w in groups) != int(input_dim):
        raise ConfigError(f"the saved column groups {groups} do not add up to the saved input width {input_dim}")
    return build(groups, settings)


def fit(spec, train: Sequence[VideoData], devel: Sequence[VideoData], settings: Mapping[str, Any], **kwargs):
    """Train with the generic trainer: the model is built for the column groups of the train videos.

    Same signature and result as :func:`affpipe.regress.train.fit_sequence_model`; ``settings`` are
    the prepared ones (:func:`prepare_settings`; prepared again here, which changes nothing, so a
    direct call trains with this regressor's own values too).
    """
    from affpipe.regress.train import fit_sequence_model

    settings = prepare_settings(settings)
    if not train:
        raise ValueError("no train video")
    groups = list(train[0].source.groups)
    for v in (*train, *devel):
        if list(v.source.groups) != groups:
            raise ConfigError(f"{v.source.path}: input columns {v.source.groups} differ from {groups} of "
                              f"{train[0].source.path}; all videos must come from the same CNN")
    inner = dataclasses.replace(spec, build_ref=lambda dim, s: build(groups, s), fit_ref=None)
    return fit_sequence_model(inner, train, devel, settings, **kwargs)
