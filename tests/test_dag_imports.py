"""The Snakemake DAG build imports no ML stack: no torch, OpenCV or dlib in the Snakemake process (issue 13).

Snakemake runs in-process under a small runner that, at exit, writes the names in `sys.modules`;
the DAG is the full one of an Aff-Wild2-layout dataset (faces with paired sides, DR, CNN features,
every default experiment plus a multilevel one reading the landmarks, evaluation), so every input
function of rules/common.smk runs, including the regressor registry's and the GPU check's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "cv2", "dlib")

# runs snakemake's CLI in this interpreter; at exit (snakemake ends with sys.exit) writes sys.modules
RUNNER = """\
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from snakemake.cli import main
sys.argv[0] = "snakemake"
main()
"""


def test_dag_build_imports_no_torch_cv2_or_dlib(tmp_path):
    from test_datasets import affwild2_tree

    root = affwild2_tree(tmp_path / "Aff-Wild2")
    shutil.copy(ROOT / "workflow_config.yaml", tmp_path / "workflow_config.yaml")
    cfg = {"datasets": {"aw": {
        "adapter": "affwild2", "root": str(root), "test_list": "test_set_release.txt",
        "cnn": {"device": "auto"}, "dr": {"device": "auto"}, "regression": {"device": "auto"},
        "experiments": {"ml_landmarks": {"input": "dfm", "regressor": "multilevel",
                                         "regression": {"multilevel": {"landmarks": True}}}},
    }}}
    (tmp_path / "aw.yaml").write_text(json.dumps(cfg))
    base = ["-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(tmp_path / "aw.yaml")]
    # the manifest checkpoint first (a job: it may import what it needs), so that the dry run plans every job
    res = subprocess.run([sys.executable, "-m", "snakemake", *base, "--cores", "1", "results/aw/manifest.parquet"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]

    modules = tmp_path / "modules.json"
    res = subprocess.run([sys.executable, "-c", RUNNER, str(modules), *base, "-n", "-p", "results/aw/ccc.json"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    loaded = json.loads(modules.read_text())
    # the runner saw the DAG build: the workflow's package, the registry and the side pairing were used
    for name in ("snakemake.dag", "affpipe.config", "affpipe.regress.registry", "affpipe.faces.sides", "affpipe.cost"):
        assert name in loaded, name
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    # and planned what needs the registry: the multilevel experiment reads the static stores' landmarks
    regress = [line for line in out.splitlines() if "affpipe regress " in line and "ml_landmarks" in line]
    assert len(regress) == 1 and "--static results/aw/static" in regress[0], regress
    assert any("--side left --paired" in line for line in out.splitlines() if "affpipe faces " in line)
