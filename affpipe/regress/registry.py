"""The regressor registry: names and what the workflow needs to know of each, torch-free (a leaf module).

A regressor of valence and arousal from per-frame features is registered once, by name
(``experiments.<name>.regressor``), with a :class:`RegressorSpec`. The specs are declared in
:mod:`affpipe.regress.regressors`, which the package's ``__init__`` imports, so the registry is complete
as soon as ``affpipe.regress`` is imported, and that import stays free of torch: the Snakemake DAG build
asks the registry which inputs a regressor reads and whether it trains, without loading any model code.

A spec names its model code by reference (``"module:attribute"``, or the function itself);
:attr:`RegressorSpec.build`, :attr:`~RegressorSpec.fit` and :attr:`~RegressorSpec.predict` import it
on first use.

* ``kind="sequence"``: a ``torch.nn.Module`` built by ``spec.build(input_dim, settings)`` that maps
  a padded batch of feature sequences ``x`` (B, L, D) float32 and their true lengths (B,) int64 to
  per-row outputs (B, L, 2) = (valence, arousal). It is trained by the generic sequence trainer
  (:mod:`affpipe.regress.train`: masked MSE, SGD with time-based decay, devel selection,
  resumable checkpoints), or by its own ``spec.fit`` with the signature of
  :func:`affpipe.regress.train.fit_sequence_model`. Its own hyper-parameters live in the nested
  object ``regression.<spec.settings_key>``.
* ``kind="per_frame"``: no sequence model; the predictions the per-frame CNN stored with the
  features (dataset ``pred`` (n, 2) of ``results/{ds}/features/{input}/{video}.h5``) are used as
  they are (e.g. the paper's "MDR+VGG per-frame" system).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from affpipe.errors import ConfigError

#: output columns of every regressor, in order
OUTPUT_DIMENSIONS = ("valence", "arousal")


def _load(ref: str | Callable[..., Any] | None) -> Callable[..., Any] | None:
    """The object a ``"module:attribute"`` reference names (a callable or None as it is)."""
    if ref is None or callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


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
    build_ref : str, optional
        ``"module:attribute"`` of ``build(input_dim, settings) -> nn.Module`` for ``kind="sequence"``;
        ``settings`` is the validated ``regression`` section. Loaded by :attr:`build`.
    settings_key : str, optional
        Nested key of the ``regression`` section holding this regressor's own hyper-parameters.
    fit_ref : str, optional
        ``"module:attribute"`` of a trainer replacing the generic one (same signature as
        :func:`affpipe.regress.train.fit_sequence_model`). Loaded by :attr:`fit`.
    predict_ref : str, optional
        ``"module:attribute"`` of the inference replacing the generic windowed one (same signature as
        :func:`affpipe.regress.train.predict_video`: ``predict(model, video, scaler, settings, *,
        device) -> (k, 2)`` predictions on the video's valid rows); used for the final predictions
        (a custom ``fit`` uses it for devel selection too). Loaded by :attr:`predict`.
    aliases : tuple of str
        Other names accepted for it.
    inputs : callable, optional
        Torch-free ``inputs(settings) -> tuple of str``: the datasets of the features store the
        regressor reads, their columns concatenated per row in this order (``"landmarks"``, last, = the
        aligned landmarks of the static store; see :class:`affpipe.regress.data.FeatureSource`). None =
        ``("features",)`` for ``kind="sequence"``, ``("pred",)`` for ``kind="per_frame"``.
    prepare_settings : callable, optional
        Torch-free ``prepare_settings(settings) -> dict``: the ``regression`` settings the regressor
        trains, predicts and post-processes with (e.g. its own ``seq_len`` replacing the top-level
        one); applied once by :func:`affpipe.regress.experiment.run_experiment` and recorded.
    rebuild_ref : str, optional
        ``"module:attribute"`` of ``rebuild(input_dim, input_groups, settings) -> nn.Module``: the
        untrained model of a saved one (``model.pt``), to load its weights into when the model is
        applied to other data (``experiments.<name>.source``). None = ``build(input_dim, settings)``.
    features_input : callable, optional
        Torch-free ``features_input(settings) -> str | None``: the CNN input whose features
        (``results/{ds}/features/<input>/``) the regressor reads instead of the experiment's own, or
        None for the experiment's own (e.g. AST-Net's ``regression.astnet.attribute_input``). None = always
        the experiment's own.
    """

    name: str
    description: str
    kind: Literal["sequence", "per_frame"]
    build_ref: str | Callable[..., Any] | None = None
    settings_key: str | None = None
    fit_ref: str | Callable[..., Any] | None = None
    predict_ref: str | Callable[..., Any] | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    inputs: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None
    prepare_settings: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    rebuild_ref: str | Callable[..., Any] | None = None
    features_input: Callable[[Mapping[str, Any]], str | None] | None = None

    @property
    def build(self) -> Callable[..., Any] | None:
        """``build(input_dim, settings) -> nn.Module`` (imports the model code)."""
        return _load(self.build_ref)

    @property
    def fit(self) -> Callable[..., Any] | None:
        """The regressor's own trainer, or None for the generic one (imports the model code)."""
        return _load(self.fit_ref)

    @property
    def predict(self) -> Callable[..., Any] | None:
        """The regressor's own inference, or None for the generic one (imports the model code)."""
        return _load(self.predict_ref)

    @property
    def rebuild(self) -> Callable[..., Any]:
        """``rebuild(input_dim, input_groups, settings) -> nn.Module``: the model layout of a saved
        model (imports the model code)."""
        if self.rebuild_ref is not None:
            return _load(self.rebuild_ref)
        build = self.build
        if build is None:
            raise ValueError(f"regressor {self.name!r} has no build function to load a saved model into")
        return lambda input_dim, input_groups, settings: build(input_dim, settings)

    @property
    def trains(self) -> bool:
        """Whether the regressor trains a model (a ``regress`` job that may use a GPU)."""
        return self.kind == "sequence"

    def features_of(self, experiment_input: str, settings: Mapping[str, Any]) -> str:
        """The CNN input whose features the regressor reads with the validated ``regression`` section
        ``settings``: :attr:`features_input`'s choice, else the experiment's ``experiment_input``."""
        if self.features_input is None:
            return experiment_input
        return self.features_input(settings) or experiment_input

    def reads(self, settings: Mapping[str, Any]) -> tuple[str, ...]:
        """The datasets the regressor reads with the validated ``regression`` section ``settings``
        (after its own :attr:`prepare_settings`); ``"landmarks"`` = the static stores' landmarks."""
        if self.inputs is None:
            return ("pred",) if self.kind == "per_frame" else ("features",)
        if self.prepare_settings is not None:
            settings = self.prepare_settings(settings)
        return tuple(self.inputs(settings))


REGRESSORS: dict[str, RegressorSpec] = {}


def register_regressor(spec: RegressorSpec) -> RegressorSpec:
    """Add ``spec`` to :data:`REGRESSORS` under its name and aliases."""
    if spec.kind == "sequence" and spec.build_ref is None and spec.fit_ref is None:
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


def regressor_names() -> list[str]:
    """Every registered name and alias, in registration order."""
    return list(REGRESSORS)
