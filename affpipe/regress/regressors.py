"""The registered regressors (torch-free): their names, what each reads and the settings it trains with.

Imported by the package's ``__init__``, so :data:`affpipe.regress.registry.REGRESSORS` is complete
whenever ``affpipe.regress`` is imported. The model code of each regressor (torch) is named by
reference and loaded on first use (:class:`affpipe.regress.registry.RegressorSpec`):

* ``bgru`` -- the DFM paper's bidirectional GRU (:mod:`affpipe.regress.bgru`);
* ``cnn`` (alias ``none``) -- the per-frame CNN's own predictions, no sequence model;
* ``multilevel`` -- Kollias & Zafeiriou's CNN-3RNN on the stored CNN taps (:mod:`affpipe.regress.multilevel`);
* ``astnet`` -- AST-Net (:mod:`affpipe.regress.astnet`);
* ``ap`` -- Affective Processes (:mod:`affpipe.regress.affective_processes`);
* ``attention`` -- the self-attention baseline (:mod:`affpipe.regress.attention`).

A new regressor registers here, and its name joins the enum of ``experiments.<name>.regressor``
(affpipe/schemas/experiments.schema.yaml; tests/test_regress.py checks that they agree).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from affpipe.errors import ConfigError
from affpipe.regress import postprocess
from affpipe.regress.data import FEATURES_DATASET, LANDMARKS_INPUT
from affpipe.regress.registry import RegressorSpec, register_regressor

# --- multilevel: what it reads and the settings it trains with ------------------------------------
log = logging.getLogger("affpipe.regress.multilevel")

#: Settings key of the multilevel regressor's nested object in the ``regression`` section.
MULTILEVEL_KEY = "multilevel"
#: Tap name -> dataset of the features store holding it (``cnn.store_taps``).
MULTILEVEL_TAP_SOURCES = {"low": "tap_low", "high": "tap_high", "fc": FEATURES_DATASET}
#: The tap the landmarks join (the paper concatenates them before the fc layer).
MULTILEVEL_LANDMARK_TAP = "fc"
#: Keys of ``regression.multilevel`` that replace the top-level ``regression`` key of the same name.
MULTILEVEL_TRAINING_OVERRIDES = ("seq_len", "train_hop", "batch_size", "loss", "optimizer", "lr", "lr_decay",
                                 "median_filter")


def multilevel_inputs(settings: Mapping[str, Any]) -> tuple[str, ...]:
    """Datasets the multilevel regressor reads, in column order (``landmarks`` last = from the static store).

    Parameters
    ----------
    settings : the validated ``regression`` section.
    """
    hp = settings[MULTILEVEL_KEY]
    taps = [t for t in MULTILEVEL_TAP_SOURCES if t in hp["taps"]]
    if hp["landmarks"] and MULTILEVEL_LANDMARK_TAP not in taps:
        raise ConfigError(f"regression.{MULTILEVEL_KEY}.landmarks joins the `{MULTILEVEL_LANDMARK_TAP}` tap, which "
                          f"regression.{MULTILEVEL_KEY}.taps ({', '.join(hp['taps'])}) leaves out",
                          hint=f"add {MULTILEVEL_LANDMARK_TAP} to the taps or set landmarks to false")
    return tuple(MULTILEVEL_TAP_SOURCES[t] for t in taps) + ((LANDMARKS_INPUT,) if hp["landmarks"] else ())


def multilevel_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``regression`` settings the multilevel regressor trains and predicts with.

    Every key of :data:`MULTILEVEL_TRAINING_OVERRIDES` set (not null) in ``regression.multilevel``
    replaces the top-level key; a replaced top-level value that differs is logged. The median-filter
    windows are checked (odd, >= 1).

    Returns
    -------
    dict
        A new settings dict (the input is not changed).
    """
    out = dict(settings)
    hp = settings[MULTILEVEL_KEY]
    for key in MULTILEVEL_TRAINING_OVERRIDES:
        value = hp.get(key)
        if value is None:
            continue
        if key in settings and settings[key] != value:
            log.info("multilevel: regression.%s = %r is replaced by regression.%s.%s = %r",
                     key, settings[key], MULTILEVEL_KEY, key, value)
        out[key] = value
    for dim, w in out["median_filter"].items():
        try:
            postprocess.check_window(w, key=f"regression.median_filter.{dim}")
        except ValueError as exc:
            raise ConfigError(str(exc), hint=f"set regression.{MULTILEVEL_KEY}.median_filter.{dim} to an odd window") from None
    return out


# --- attention: the settings it trains with -----------------------------------------------------
#: keys of ``regression.attention`` that replace the top-level ones when set (not null)
ATTENTION_TRAINING_OVERRIDES = ("seq_len", "train_hop")


def attention_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``regression`` settings with ``attention.seq_len`` / ``train_hop`` (when not null) replacing the top-level keys."""
    out = dict(settings)
    for key in ATTENTION_TRAINING_OVERRIDES:
        value = settings["attention"].get(key)
        if value is not None:
            out[key] = int(value)
    return out


# --- the registrations --------------------------------------------------------------------------
register_regressor(RegressorSpec(
    name="bgru",
    description="bidirectional GRU over the feature sequence, linear per-frame output (DFM paper)",
    kind="sequence",
    build_ref="affpipe.regress.bgru:build_bgru",
    settings_key="bgru",
))

register_regressor(RegressorSpec(
    name="cnn",
    description="the per-frame CNN's own predictions (dataset `pred` of the features store), no sequence model",
    kind="per_frame",
    aliases=("none",),
))

register_regressor(RegressorSpec(
    name="multilevel",
    description="multi-level CNN-RNN: one 2-layer GRU per CNN tap (2nd pool, last pool, fc), outputs "
    "concatenated, CCC loss, median-filtered (Kollias & Zafeiriou)",
    kind="sequence",
    settings_key=MULTILEVEL_KEY,
    fit_ref="affpipe.regress.multilevel:fit",
    rebuild_ref="affpipe.regress.multilevel:rebuild",
    inputs=multilevel_inputs,
    prepare_settings=multilevel_settings,
))

def _astnet_features_input(settings: Mapping[str, Any]) -> str | None:
    """AST-Net reads the features of ``regression.astnet.attribute_input`` when set."""
    return settings["astnet"]["attribute_input"]


register_regressor(RegressorSpec(
    name="astnet",
    description="AST-Net: stacked LSTM (50, 40) on clips every Δt frames with a Siamese twin one frame "
                "later; label + trend + local + global + Siamese loss (Wang & Hsu 2017)",
    kind="sequence",
    build_ref="affpipe.regress.astnet:build_astnet",
    settings_key="astnet",
    fit_ref="affpipe.regress.astnet:fit_astnet",
    predict_ref="affpipe.regress.astnet:predict_astnet",
    features_input=_astnet_features_input,
))

register_regressor(RegressorSpec(
    name="ap",
    description="Affective Processes: Neural Process with a global latent over the backbone's features and "
                "per-frame predictions, lowest-uncertainty context at test time (Sanchez et al. 2021)",
    kind="sequence",
    build_ref="affpipe.regress.affective_processes:build_ap",
    settings_key="ap",
    fit_ref="affpipe.regress.affective_processes:fit_ap",
    predict_ref="affpipe.regress.affective_processes:predict_ap",
))

register_regressor(RegressorSpec(
    name="attention",
    description="self-attention baseline: Transformer encoder (2 layers, 32 heads, width 512) with positional "
                "encoding and a per-frame linear output (the Affective Processes paper's in-house baseline)",
    kind="sequence",
    build_ref="affpipe.regress.attention:build_attention",
    settings_key="attention",
    prepare_settings=attention_settings,
))
