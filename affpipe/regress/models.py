"""Regressors of valence and arousal from per-frame features, by name (``experiments.<name>.regressor``).

A regressor is registered once in :data:`REGRESSORS` with a :class:`RegressorSpec`:

* ``kind="sequence"``: a ``torch.nn.Module`` built by ``spec.build(input_dim, settings)`` that maps
  a padded batch of feature sequences ``x`` (B, L, D) float32 and their true lengths (B,) int64 to
  per-row outputs (B, L, 2) = (valence, arousal). It is trained by the generic sequence trainer
  (:mod:`affpipe.regress.train`: masked MSE, SGD with time-based decay, devel selection,
  resumable checkpoints). Its own hyper-parameters live in the nested object
  ``regression.<spec.settings_key>``.
* ``kind="per_frame"``: no sequence model; the predictions the per-frame CNN stored with the
  features (dataset ``pred`` (n, 2) of ``results/{ds}/features/{input}/{video}.h5``) are used as
  they are (e.g. the paper's "MDR+VGG per-frame" system).

Later regressors (AST-Net, the multi-level CNN-RNN, Affective Processes) register here under their
own names. One whose training differs from the generic masked-MSE loop (other losses, Siamese
branches, context sets) sets ``spec.fit`` to its own trainer with the signature of
:func:`affpipe.regress.train.fit_sequence_model`.

Registered here: ``bgru`` (the DFM paper's bidirectional GRU), ``cnn`` (alias ``none``) and
``multilevel`` (Kollias & Zafeiriou's CNN-3RNN on the stored CNN taps, :mod:`affpipe.regress.multilevel`);
in their own modules: ``astnet`` (:mod:`affpipe.regress.astnet`), ``ap`` (Affective Processes,
:mod:`affpipe.regress.affective_processes`) and ``attention`` (the self-attention baseline,
:mod:`affpipe.regress.attention`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from affpipe.errors import ConfigError

#: output columns of every regressor, in order
OUTPUT_DIMENSIONS = ("valence", "arousal")


@dataclass(frozen=True)
class RegressorSpec:
    """How a regressor is built and trained.

    Attributes
    ----------
    name : str
        Registry name (``experiments.<name>.regressor``).
    description : str
        One line for logs and reports.
    kind : {"sequence", "per_frame"}
        See the module docstring.
    build : callable, optional
        ``build(input_dim, settings) -> nn.Module`` for ``kind="sequence"``; ``settings`` is the
        validated ``regression`` section.
    settings_key : str, optional
        Nested key of the ``regression`` section holding this regressor's own hyper-parameters.
    fit : callable, optional
        A trainer replacing the generic one (same signature as
        :func:`affpipe.regress.train.fit_sequence_model`).
    predict : callable, optional
        Inference replacing the generic windowed one (same signature as
        :func:`affpipe.regress.train.predict_video`: ``predict(model, video, scaler, settings, *,
        device) -> (k, 2)`` predictions on the video's valid rows); used for the final predictions
        (a custom ``fit`` uses it for devel selection too).
    aliases : tuple of str
        Other names accepted for it.
    inputs : callable, optional
        ``inputs(settings) -> tuple of str``: the datasets of the features store the regressor reads,
        their columns concatenated per row in this order (``"landmarks"``, last, = the aligned
        landmarks of the static store; see :class:`affpipe.regress.data.FeatureSource`). None =
        ``("features",)`` for ``kind="sequence"``, ``("pred",)`` for ``kind="per_frame"``.
    prepare_settings : callable, optional
        ``prepare_settings(settings) -> dict``: the ``regression`` settings the regressor trains,
        predicts and post-processes with (e.g. its own ``seq_len`` replacing the top-level one);
        applied once by :func:`affpipe.regress.experiment.run_experiment` and recorded.
    """

    name: str
    description: str
    kind: Literal["sequence", "per_frame"]
    build: Callable[[int, Mapping[str, Any]], nn.Module] | None = None
    settings_key: str | None = None
    fit: Callable[..., Any] | None = None
    predict: Callable[..., Any] | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    inputs: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None
    prepare_settings: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None


REGRESSORS: dict[str, RegressorSpec] = {}


def register_regressor(spec: RegressorSpec) -> RegressorSpec:
    """Add ``spec`` to :data:`REGRESSORS` under its name and aliases."""
    if spec.kind == "sequence" and spec.build is None and spec.fit is None:
        raise ValueError(f"sequence regressor {spec.name!r} needs a build function or its own fit")
    for key in (spec.name, *spec.aliases):
        if key in REGRESSORS:
            raise ValueError(f"regressor name {key!r} is already registered")
        REGRESSORS[key] = spec
    return spec


def get_regressor(name: str) -> RegressorSpec:
    """The spec registered as ``name``; :class:`ConfigError` listing the known names otherwise."""
    try:
        return REGRESSORS[name]
    except KeyError:
        known = ", ".join(sorted(REGRESSORS))
        raise ConfigError(f"unknown regressor {name!r}; known: {known}") from None


class BGRU(nn.Module):
    """Bidirectional GRU regressor with a linear per-row output (DFM paper §4, Fig. 4).

    Parameters
    ----------
    input_dim : int
        Feature size D (4096 for VGG-16 fc6).
    hidden_units : int
        Units per direction (the paper: 200).
    layers : int
        Stacked GRU layers (the paper: 1).
    dropout : float
        Dropout on the input features and between stacked layers (the paper: none).
    outputs : int
        Output columns (2: valence, arousal).

    Notes
    -----
    ``forward(x, lengths)`` takes a zero-padded batch ``x`` (B, L, D) and the true lengths (B,);
    sequences are packed so the backward direction starts at each sequence's real last row, not
    in the padding. Returns (B, L, outputs); rows beyond a sequence's length are 0.
    """

    def __init__(self, input_dim: int, *, hidden_units: int, layers: int = 1, dropout: float = 0.0, outputs: int = 2):
        super().__init__()
        self.input_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(
            input_size=input_dim,
            hidden_size=hidden_units,
            num_layers=layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.head = nn.Linear(2 * hidden_units, outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        total = x.shape[1]
        x = self.input_dropout(x)
        packed = pack_padded_sequence(x, lengths.detach().to("cpu", torch.int64), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=total)
        return self.head(out)


def _build_bgru(input_dim: int, settings: Mapping[str, Any]) -> nn.Module:
    hp = settings["bgru"]
    return BGRU(input_dim, hidden_units=int(hp["hidden_units"]), layers=int(hp["layers"]),
                dropout=float(hp["dropout"]), outputs=len(OUTPUT_DIMENSIONS))


register_regressor(RegressorSpec(
    name="bgru",
    description="bidirectional GRU over the feature sequence, linear per-frame output (DFM paper)",
    kind="sequence",
    build=_build_bgru,
    settings_key="bgru",
))

register_regressor(RegressorSpec(
    name="cnn",
    description="the per-frame CNN's own predictions (dataset `pred` of the features store), no sequence model",
    kind="per_frame",
    aliases=("none",),
))


def _register_multilevel() -> None:
    from affpipe.regress import multilevel

    register_regressor(RegressorSpec(
        name="multilevel",
        description="multi-level CNN-RNN: one 2-layer GRU per CNN tap (2nd pool, last pool, fc), outputs "
        "concatenated, CCC loss, median-filtered (Kollias & Zafeiriou)",
        kind="sequence",
        settings_key=multilevel.SETTINGS_KEY,
        fit=multilevel.fit,
        inputs=multilevel.input_datasets,
        prepare_settings=multilevel.prepare_settings,
    ))


_register_multilevel()

# AST-Net, Affective Processes and the self-attention baseline register themselves in their own modules
from affpipe.regress import affective_processes, astnet, attention  # noqa: E402,F401 - registration
