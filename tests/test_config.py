"""Config validation: string values typed by the schema (Snakemake passes nested --config values as
strings), invalid values refused naming the key and where they were set."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from affpipe.config import COMMAND_LINE, coerce, section_settings, validate_config
from affpipe.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _config(**sections):
    return json.loads(json.dumps(sections))


@pytest.mark.parametrize(
    ("section", "key", "text", "value"),
    [
        ("faces", "redetect_every", "5", 5),  # integer
        ("faces", "smoothing_sigma", "1.5", 1.5),  # number
        ("faces", "smoothing_sigma", "2", 2),  # number: an integer is a number
        ("dr", "gamma", "1e-3", 1e-3),  # number in exponent notation
        ("dr", "gamma", "2.5E+2", 250.0),
        ("demo", "preview", "false", False),  # boolean, YAML spellings
        ("demo", "preview", "True", True),
        ("demo", "preview", "yes", True),
        ("demo", "preview", "OFF", False),
        ("dr", "theta", "0.5", 0.5),  # [number, string] with pattern ^auto$: a number
        ("dr", "theta", "auto", "auto"),  # ... and the one string it admits stays a string
        ("cnn", "backbone", "small", "small"),  # a string place keeps strings, even number-like ones
    ],
)
def test_string_scalars_are_typed_by_the_schema(section, key, text, value):
    out = section_settings(section, {key: text})
    assert out[key] == value and type(out[key]) is type(value)


@pytest.mark.parametrize("text", ["null", "~", "None", "NULL"])
def test_null_spellings_reach_a_nullable_integer_as_none(text):
    config = _config(datasets={"demo": {"adapter": "csv", "root": text, "expected_fps": text}})
    validate_config(config)
    # root is [string, null]: a string stays the string it is; expected_fps is [number, null]
    assert config["datasets"]["demo"]["root"] == text
    assert config["datasets"]["demo"]["expected_fps"] is None


def test_union_types_take_the_type_the_text_reads_as():
    entry = {"adapter": "csv", "expected_fps": "25", "unlabelled_value": "-5.0"}
    validate_config(config := _config(datasets={"x": entry}))
    assert config["datasets"]["x"]["expected_fps"] == 25 and isinstance(config["datasets"]["x"]["expected_fps"], int)
    assert config["datasets"]["x"]["unlabelled_value"] == -5.0


def test_enum_with_null_reads_null():
    # experiments.<name>.backbone: [string, null] with enum [vgg16, small, null]
    out = section_settings("experiments", {"e": {"input": "dfm", "backbone": "null", "enabled": "true"}})
    assert out["e"]["backbone"] is None and out["e"]["enabled"] is True


def test_integer_place_never_takes_a_fraction():
    for text in ("5.5", "5.0", "1e3", "five", "true"):
        with pytest.raises(ConfigError, match=r"config key `faces\.redetect_every`.*is not of type 'integer'"):
            section_settings("faces", {"redetect_every": text})


def test_nested_dataset_sections_and_experiment_overrides_are_typed():
    config = _config(
        datasets={"demo": {
            "adapter": "csv",
            "dynamic": {"T": "10"},
            "faces": {"redetect_every": "7"},
            "demo": {"preview": "false"},
            "experiments": {"mine": {"input": "dfm", "regression": {"seq_len": "40", "lr": "5e-3"}}},
        }},
        experiments={"glob": {"input": "sfa", "regression": {"bgru": {"hidden_units": "32"}}}},
        threads={"dynamic": "3"},
    )
    validate_config(config)
    ds = config["datasets"]["demo"]
    assert ds["dynamic"]["T"] == 10 and ds["faces"]["redetect_every"] == 7 and ds["demo"]["preview"] is False
    assert ds["experiments"]["mine"]["regression"] == {"seq_len": 40, "lr": 0.005}
    assert config["experiments"]["glob"]["regression"]["bgru"]["hidden_units"] == 32
    assert config["threads"]["dynamic"] == 3


def test_lists_are_typed_item_by_item_without_touching_the_given_list():
    levels = ["3", "5"]
    given = {"levels": levels, "betas": ["0.9", "0.999"], "val_partitions": ["devel"]}
    out = coerce(given, "dr.schema.yaml")
    assert out["levels"] == [3, 5] and out["betas"] == [0.9, 0.999]
    assert out["val_partitions"] == ["devel"]  # an array of strings stays strings
    assert levels == ["3", "5"]  # a new list: Snakemake's own copy of the --config values is not changed


def test_uncoercible_value_names_key_and_command_line():
    config = _config(faces={"redetect_every": "often"})
    layers = [(COMMAND_LINE, {"faces": {"redetect_every": "often"}})]
    with pytest.raises(ConfigError) as err:
        validate_config(config, layers=layers)
    msg = str(err.value)
    assert "config key `faces.redetect_every` (from the command line --config): 'often' is not of type 'integer'" in msg
    assert not msg.startswith("workflow_config.yaml")


def test_source_is_the_last_layer_setting_the_key(tmp_path):
    cpu = tmp_path / "cpu.yaml"
    cpu.write_text("faces:\n  redetect_every: -1\nstatic:\n  size: 64\n")
    # the base (workflow_config.yaml) sets static.size too; the configfile overrides it; --config sets T
    config = _config(faces={"redetect_every": -1}, static={"size": "huge"}, dynamic={"T": "x"})
    layers = [("--configfile cpu.yaml", cpu), (COMMAND_LINE, {"dynamic": {"T": "x"}})]
    with pytest.raises(ConfigError) as err:
        validate_config(config, layers=layers)
    msg = str(err.value)
    assert "`faces.redetect_every` (from --configfile cpu.yaml)" in msg
    assert "`static.size` (from --configfile cpu.yaml)" in msg  # cpu.yaml sets it last
    assert "`dynamic.T` (from the command line --config)" in msg
    config = _config(static={"size": "huge"})
    with pytest.raises(ConfigError, match=r"`static\.size` \(from workflow_config\.yaml\)"):
        validate_config(config, layers=[(COMMAND_LINE, {"faces": {}})])


def test_unexpected_key_is_blamed_on_the_layer_that_adds_it():
    config = _config(datasets={"demo": {"adapter": "csv", "roott": "/x"}})
    layers = [(COMMAND_LINE, {"datasets": {"demo": {"roott": "/x"}}})]
    with pytest.raises(ConfigError, match=r"`datasets\.demo` \(from the command line --config\).*'roott' was unexpected"):
        validate_config(config, layers=layers)


def test_dataset_stage_override_is_named_with_its_own_key():
    config = _config(datasets={"demo": {"adapter": "csv", "dynamic": {"T": "many"}}})
    layers = [(COMMAND_LINE, {"datasets": {"demo": {"dynamic": {"T": "many"}}}})]
    with pytest.raises(ConfigError) as err:
        validate_config(config, layers=layers)
    msg = str(err.value)
    assert "dataset `demo`" in msg
    assert "config key `datasets.demo.dynamic.T` (from the command line --config): 'many' is not of type 'integer'" in msg


def _snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("faces={max_frame_shortfall: 0.25}", "--max-frame-shortfall 0.25 "),
        ("demo={fps: 12.5, preview: false, frames_per_video: 40}", '"fps":12.5,'),
        ("demo={fps: 12.5, preview: false, frames_per_video: 40}", '"preview":false,'),
        ("demo={fps: 12.5, preview: false, frames_per_video: 40}", '"frames_per_video":40,'),
    ],
)
def test_snakemake_config_values_reach_the_jobs_typed(override, shown):
    """The real thing: Snakemake 9 parses --config, the workflow types it, the job gets the typed value."""
    returncode, out = _dry_run_printing_commands(override)
    assert returncode == 0, out
    assert shown in out, out


@functools.lru_cache(maxsize=None)
def _dry_run_printing_commands(override: str) -> tuple[int, str]:
    """One dry run per override, however many of its values the test above checks."""
    res = _snakemake("-n", "-p", "results/demo/manifest.parquet", "--config", override)
    return res.returncode, res.stdout + res.stderr


def test_snakemake_names_the_source_of_a_bad_value(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("static:\n  size: big\n")
    res = _snakemake("-n", "results/demo/manifest.parquet", "--configfile", str(cfg), "--config", "faces={redetect_every: 5.5}")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "config key `faces.redetect_every` (from the command line --config): '5.5' is not of type 'integer'" in out, out
    assert f"config key `static.size` (from --configfile {cfg}): 'big' is not of type 'integer'" in out, out


def test_settings_are_validated_once_per_content(monkeypatch):
    """section_settings validates each distinct content once per process (issue 14 §6): a second call
    with equal settings validates nothing, returns an equal, independent copy, and leaves the input
    alone; other content, or an invalid value, is validated (and refused) as before."""
    import affpipe.config as config

    calls = []
    real = config.validate
    monkeypatch.setattr(config, "validate", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    monkeypatch.setattr(config, "_VALIDATED", {})  # this process's earlier validations
    given = {"redetect_every": 7, "detector": "hog"}
    first = section_settings("faces", given)
    assert given == {"redetect_every": 7, "detector": "hog"}
    first["detector"] = "changed"
    second = section_settings("faces", dict(given))
    assert second["detector"] == "hog" and second["redetect_every"] == 7
    assert second == real(dict(given), "faces.schema.yaml")
    assert calls == ["faces.schema.yaml"]
    section_settings("faces", {"redetect_every": 8})
    assert calls == ["faces.schema.yaml"] * 2
    for n in (3, 4):
        with pytest.raises(ConfigError, match="faces.redetect_every"):
            section_settings("faces", {"redetect_every": "x"})
        assert len(calls) == n


def test_schema_files_are_read_once_per_process(monkeypatch):
    """The whole config, then each dataset's stage sections, are validated at every DAG build (in every
    Snakemake process: two per job on SLURM); each validation looks its `$ref`s up again, and each schema
    file is read and parsed once per process, not at every lookup."""
    import yaml

    import affpipe.config as config

    reads = []
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (
        reads.append(self.name) if self.parent == config.SCHEMA_DIR else None) or real(self, *a, **k))
    config._retrieve.cache_clear()
    config.load_schema.cache_clear()
    workflow = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())
    for _ in range(2):
        validate_config(json.loads(json.dumps(workflow)))
    assert reads and len(reads) == len(set(reads)), sorted(reads)
    assert set(reads) == {p.name for p in config.SCHEMA_DIR.glob("*.schema.yaml")}
