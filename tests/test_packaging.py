"""Install files, config schema and config agree with each other and with the code."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml

from affpipe.config import SCHEMA_DIR, load_schema, section_settings, validate_config
from affpipe.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^;\s]+)", dep)
        assert m, f"pyproject dependency {dep!r} is not pinned with =="
        pins[m.group(1).lower()] = m.group(2)
    return pins


def test_torch_pinned_to_cpu_build_on_disk():
    """pyproject pins torch 2.13.0, and the torch installed is that version's CPU build: no CUDA
    runtime compiled in, no CUDA libraries in the wheel or beside it (nvidia-* packages)."""
    import importlib.metadata as md

    import torch

    assert _pyproject_pins()["torch"] == "2.13.0"
    installed = md.version("torch")
    assert installed.split("+")[0] == "2.13.0", f"torch {installed} is installed, pyproject pins 2.13.0"
    assert torch.version.cuda is None and not torch.backends.cuda.is_built(), (
        f"torch {installed} is a CUDA build (CUDA {torch.version.cuda}), not the CPU build")
    assert getattr(torch.version, "hip", None) is None, f"torch {installed} is a ROCm build"
    cuda_libs = sorted(p.name for p in (Path(torch.__file__).parent / "lib").iterdir()
                       if re.match(r"lib(cudart|cublas|cudnn|nccl|c10_cuda|torch_cuda)", p.name))
    assert not cuda_libs, f"CUDA libraries in torch/lib: {cuda_libs}"
    nvidia = sorted(d.metadata["Name"] for d in md.distributions()
                    if (d.metadata["Name"] or "").lower().startswith(("nvidia-", "triton")))
    assert not nvidia, f"CUDA packages installed beside torch: {nvidia}"


@pytest.mark.parametrize("env_file", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_conda_env_parses_and_pins_agree_with_pyproject(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert env["channels"], "conda env needs channels"
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    env_pins = {}
    assert "-e .." in pip_section, "the env must install affpipe itself"
    for dep in pip_section:
        if dep.startswith("-e "):
            continue
        name, _, version = dep.partition("==")
        assert version, f"{env_file.name}: {dep!r} is not pinned with =="
        env_pins[name.lower()] = version
    assert env_pins == _pyproject_pins()


# Loads the workflow with Snakemake's API (no DAG, no jobs) and prints, per rule, whether it runs
# anything and the conda env file its `conda:` directive names, resolved like --sdm conda does.
_RULE_ENVS = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings(quiet=True)) as api:
    wf = api.workflow(resource_settings=ResourceSettings(), snakefile=Path(sys.argv[1]), workdir=Path(sys.argv[2]))
    out = {}
    for rule in wf._workflow.rules:
        env = rule.conda_env
        if env is not None:
            env = str(env)
            env = str((Path(rule.snakefile).parent / env).resolve()) if not Path(env).is_absolute() else env
        out[rule.name] = {"runs": not rule.norun, "conda": env}
print(json.dumps(out))
"""


def test_every_rule_uses_the_conda_env(tmp_path):
    """Every rule that runs a command names envs/affpipe.yaml in its `conda:` directive (what
    `--sdm conda` builds), read from the workflow as Snakemake loads it."""
    import json
    import subprocess
    import sys

    shutil.copy(ROOT / "workflow_config.yaml", tmp_path / "workflow_config.yaml")
    res = subprocess.run([sys.executable, "-c", _RULE_ENVS, str(ROOT / "Snakefile"), str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    rules = json.loads(res.stdout.strip().splitlines()[-1])
    running = {name: r for name, r in rules.items() if r["runs"]}
    assert len(running) >= 20, f"the workflow loaded with only {sorted(running)}"
    env = str((ROOT / "envs" / "affpipe.yaml").resolve())
    assert Path(env).is_file()
    wrong = {name: r["conda"] for name, r in running.items() if r["conda"] != env}
    assert not wrong, f"rules without `conda: ENV` ({env}): {wrong}"


def _walk_properties(schema: dict, where: str):
    for name, sub in (schema.get("properties") or {}).items():
        yield f"{where}.{name}", sub
        if "$ref" not in sub:
            yield from _walk_properties(sub, f"{where}.{name}")


@pytest.mark.parametrize("schema_file", sorted(SCHEMA_DIR.glob("*.schema.yaml")), ids=lambda p: p.name)
def test_schema_keys_have_descriptions(schema_file):
    schema = load_schema(schema_file.name)
    assert schema.get("description"), f"{schema_file.name} needs a top-level description"
    for key, sub in _walk_properties(schema, schema_file.stem):
        if "$ref" in sub:
            continue
        assert sub.get("description"), f"{schema_file.name}: `{key}` has no description"


def test_workflow_config_validates_and_names_real_datasets_unset():
    config = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())
    validate_config(config)
    for name, adapter in [("semaine", "semaine"), ("recola", "recola"), ("affwild2", "affwild2")]:
        assert config["datasets"][name]["adapter"] == adapter
        assert config["datasets"][name]["root"] is None
    assert config["datasets"]["demo"]["generated"] is True
    # defaults were filled in for every stage section
    for section in ("faces", "static", "dynamic", "demo", "threads", "report"):
        assert isinstance(config[section], dict) and config[section]


def test_invalid_config_names_the_key():
    config = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())
    config["faces"]["detector"] = "magic"
    with pytest.raises(ConfigError, match=r"`faces\.detector`"):
        validate_config(config)
    config = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())
    config["threads"]["dynamic"] = 0
    with pytest.raises(ConfigError, match=r"`threads\.dynamic`"):
        validate_config(config)


def test_section_settings_fill_defaults_and_reject_unknown_keys():
    s = section_settings("faces", {})
    assert s["detector"] == "hog"
    with pytest.raises(ConfigError, match="faces"):
        section_settings("faces", {"no_such_key": 1})


def test_config_docs_are_generated_from_the_schema():
    from affpipe.commands.config_docs import render

    doc = ROOT / "docs" / "config.md"
    assert doc.is_file(), "run `python -m affpipe config-docs -o docs/config.md`"
    assert doc.read_text() == render(), "docs/config.md is stale: run `python -m affpipe config-docs -o docs/config.md`"


def _source_calls(func_names: set[str]):
    """(file, line, call node) of every call of one of `func_names` (``torch.load``, ``eval``...) in
    the package's Python files (the Snakefile and rules are checked by text in the test below)."""
    import ast

    files = sorted((ROOT / "affpipe").rglob("*.py"))
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else (
                    f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None)
                if name in func_names:
                    yield path.relative_to(ROOT), node.lineno, node


def test_checkpoints_and_weights_load_with_weights_only():
    """Every torch.load in the package passes weights_only=True (no pickle code execution from a
    user-supplied or corrupted file)."""
    import ast

    calls = list(_source_calls({"torch.load"}))
    assert calls, "no torch.load found: the scan is broken"
    bad = [f"{p}:{line}" for p, line, node in calls
           if not any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                      for k in node.keywords)]
    assert not bad, f"torch.load without weights_only=True: {bad}"


#: the Loaders of a `yaml.load` call that parses data only: PyYAML's safe loader, or its libyaml (C) twin
SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader", "getattr(yaml, 'CSafeLoader', yaml.SafeLoader)"}


def _unsafe(node) -> bool:
    """Whether a call of eval, exec, pickle.load(s), yaml.unsafe_load or yaml.load may run code: all but
    `yaml.load` with a Loader in `SAFE_YAML_LOADERS`."""
    import ast

    return not (ast.unparse(node.func) == "yaml.load"
                and any(k.arg == "Loader" and ast.unparse(k.value) in SAFE_YAML_LOADERS for k in node.keywords))


def test_config_is_data_only():
    """Config and settings are parsed with yaml.safe_load (or yaml.load with a safe loader) / json, never
    evaluated."""
    bad = [f"{p}:{line}" for p, line, node in _source_calls({"eval", "exec", "yaml.load", "yaml.unsafe_load",
                                                             "pickle.load", "pickle.loads"}) if _unsafe(node)]
    assert not bad, f"code evaluation or unsafe deserialisation: {bad}"
    for path in [ROOT / "Snakefile", *(ROOT / "rules").glob("*.smk")]:
        text = path.read_text()
        assert not re.search(r"\b(eval|exec)\(|yaml\.(unsafe_)?load\(", text), path


def test_plain_install_finds_the_schemas(tmp_path):
    """`pip install .` (not editable) ships the config schemas as package data: in a fresh venv whose
    only affpipe is the installed wheel, `python -m affpipe config-docs`, run from another directory,
    prints the same document as the source tree (issue 14 §6). The dependencies come from this
    environment's site-packages (a .pth line: its own .pth files, e.g. the editable install's
    finder, are not read), the wheel is built from a copy of the sources without build isolation."""
    import os
    import site
    import subprocess
    import sys
    import sysconfig

    from affpipe.commands.config_docs import render

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "affpipe", src / "affpipe", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in {sysconfig.get_path("purelib"), *site.getsitepackages()} if Path(p).is_dir()]
    Path(purelib, "deps.pth").write_text("".join(f"{p}\n" for p in deps))
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps",
                          "--no-build-isolation", "--no-index", str(src)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the installed wheel
    res = subprocess.run([str(py), "-m", "affpipe", "config-docs"], capture_output=True, text=True, timeout=120,
                         cwd=run_dir, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    found = subprocess.run([str(py), "-c", "import affpipe.config as c; print(c.SCHEMA_DIR)"], capture_output=True,
                           text=True, cwd=run_dir, env=env, check=True).stdout.strip()
    assert Path(found).is_relative_to(purelib), f"affpipe imported from {found}, not from the installed wheel"
    assert res.stdout == render()
