"""The CPU cost policy (affpipe/cost.py) and the CPU preset (config/cpu.yaml)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from affpipe import cost
from affpipe.config import section_settings, validate_config

ROOT = Path(__file__).resolve().parent.parent
PRESET = ROOT / cost.CPU_PRESET
SECTIONS = ("static", "dr", "cnn", "regression")


def merged_config(*files: Path) -> dict:
    """workflow_config.yaml with `files` merged over it the way Snakemake merges --configfile."""
    from snakemake.utils import update_config

    config = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())
    for f in files:
        update_config(config, yaml.safe_load(f.read_text()))
    return config


def dataset_section(config: dict, ds: str, section: str) -> dict:
    """A stage section of one dataset as rules/common.smk builds it (global, then the dataset's keys)."""
    merged = dict(config.get(section, {}))
    merged.update(config["datasets"][ds].get(section) or {})
    return section_settings(section, merged)


def test_preset_validates_and_gives_every_dataset_the_demo_sizes():
    config = merged_config(PRESET)
    validate_config(copy.deepcopy(config), source=str(PRESET))
    demo = merged_config()
    for ds in ("semaine", "recola", "affwild2", "demo"):
        static, dr, cnn = (dataset_section(config, ds, s) for s in ("static", "dr", "cnn"))
        assert static["size"] == 112, ds
        assert (dr["width"], dr["depth"], cnn["backbone"]) == (16, 3, "small"), ds
        assert not cost.is_paper_size_dr(dr["width"]) and not cost.is_paper_size_cnn(cnn["backbone"])
        for key in ("width", "depth", "epochs"):  # the demo's own model (the demo trains on fewer
            assert dr[key] == dataset_section(demo, "demo", "dr")[key], key  # windows per epoch to stay short)
        assert dr["windows_per_epoch"] == (512 if ds == "demo" else 1024), ds
    # the per-dataset window lengths of the real datasets are kept
    assert dataset_section(config, "semaine", "dynamic")["T"] == 20
    assert dataset_section(config, "affwild2", "dynamic")["T"] == 6
    # the demo itself is unchanged by the preset
    for section in SECTIONS:
        assert {k: v for k, v in dataset_section(config, "demo", section).items()
                if k not in ("train_frames_per_epoch", "devel_frames")} == \
               {k: v for k, v in dataset_section(demo, "demo", section).items()
                if k not in ("train_frames_per_epoch", "devel_frames")}, section


def test_defaults_are_paper_size():
    config = merged_config()
    dr, cnn = dataset_section(config, "semaine", "dr"), dataset_section(config, "semaine", "cnn")
    assert cost.is_paper_size_dr(dr["width"]) and cost.is_paper_size_cnn(cnn["backbone"])


def test_estimates_scale_with_frames_epochs_and_branches():
    cnn = section_settings("cnn", {})
    one = cost.cnn_cost("dfm", cnn, image_side=224, train_frames=1000, devel_frames=0, all_frames=0)
    assert one.train_s == pytest.approx(cnn["epochs"] * 1000 / cost.CNN_TRAIN_FPS[("vgg16", 224)])
    two = cost.cnn_cost("dfa+dfs", cnn, image_side=224, train_frames=2000, devel_frames=0, all_frames=0)
    assert two.train_s == pytest.approx(4 * one.train_s)
    capped = cost.cnn_cost("dfm", {**cnn, "train_frames_per_epoch": 500}, image_side=224, train_frames=2000,
                           devel_frames=0, all_frames=0)
    assert capped.train_s == pytest.approx(one.train_s / 2)
    # a smaller input costs less, by area
    small_side = cost.cnn_cost("dfm", cnn, image_side=112, train_frames=1000, devel_frames=0, all_frames=0)
    assert small_side.train_s == pytest.approx(one.train_s / 4)
    dr = section_settings("dr", {})
    paper = cost.dr_cost(3, dr, image_side=224, train_frames=1000, all_frames=1000)
    preset = cost.dr_cost(3, {**dr, "width": 16, "depth": 3, "epochs": 4, "windows_per_epoch": 1024, "val_windows": 256},
                          image_side=112, train_frames=1000, all_frames=1000)
    assert paper.paper_size and not preset.paper_size
    assert paper.total_s > 50 * preset.total_s  # hours against minutes
    # the SEMAINE-layout run of issue 12 saw ~36 s per batch of 16 windows at paper size on 2 cores
    assert 18 < 16 * cost.dr_seconds(64, 4, 224, train=True) < 72


def test_warning_only_for_paper_size_models_and_names_the_switches():
    dr = section_settings("dr", {})
    preset = cost.dr_cost(3, {**dr, "width": 16, "depth": 3}, image_side=112, train_frames=1000, all_frames=1000)
    assert cost.cpu_warning("semaine", [preset], frames=1000, devices=["dr.device: auto"]) is None
    paper = cost.dr_cost(3, dr, image_side=224, train_frames=10_000, all_frames=12_000)
    text = cost.cpu_warning("semaine", [paper, preset], frames=12_000, devices=["dr.device: auto"])
    assert "WITHOUT A GPU" in text and "12,000 frames" in text
    assert "--configfile config/cpu.yaml" in text and "--workflow-profile profiles/slurm" in text
    assert "dr.device: auto" in text and "DR UNet T=3 (width 64" in text
    assert cost.format_hours(paper.total_s) in text or " h " in text
    per_k = cost.cpu_warning("x", [paper], frames=None, devices=["dr.device: cpu"])
    assert "per 1,000 frames" in per_k


def test_device_policy(tmp_path):
    assert cost.runs_on_gpu("cuda", gpu_here=False) and cost.runs_on_gpu("cuda:1", gpu_here=False)
    assert not cost.runs_on_gpu("cpu", gpu_here=True)
    assert cost.runs_on_gpu("auto", gpu_here=True) and not cost.runs_on_gpu("auto", gpu_here=False)
    assert cost.runs_on_gpu("auto", gpu_here=False, gpu_requested=True)
    assert not cost.gpu_visible(dev_glob=str(tmp_path / "nvidia[0-9]*")) or cost.shutil.which("nvidia-smi")
    (tmp_path / "nvidia0").touch()
    assert cost.gpu_visible(dev_glob=str(tmp_path / "nvidia[0-9]*"))


def test_cost_module_does_not_import_torch():
    code = "import sys, affpipe.cost; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
