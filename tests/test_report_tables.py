"""Results and data-quality tables (affpipe.results_table, affpipe.quality_table) and their CLIs."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from affpipe import quality_table as qt
from affpipe import results_table as rt


def _dim(ccc, pcc, *, scored=True):
    if not scored:
        return {"scored": False, "labelled_frames": 0}
    return {"scored": True, "concatenated": {"ccc": ccc, "pcc": pcc},
            "per_video_mean": {"ccc": ccc / 2, "pcc": pcc}}


def _report():
    """Two experiments scored on devel and test; train unlabelled; one PCC undefined."""

    def exp(label, base):
        parts = {
            "train": {"scored": False, "videos": 2, "dimensions": {"valence": _dim(0, 0, scored=False),
                                                                    "arousal": _dim(0, 0, scored=False)}},
            "devel": {"scored": True, "videos": 3, "dimensions": {"valence": _dim(base, base + 0.1),
                                                                   "arousal": _dim(base + 0.2, None)}},
            "test": {"scored": True, "videos": 1, "dimensions": {"valence": _dim(-base, 0.5),
                                                                  "arousal": _dim(base, 0.25)}},
        }
        return {"label": label, "partitions": parts}

    return {"format": "affpipe-ccc", "dataset": "toy_ds",
            "evaluate_settings": {"partitions": ["train", "devel", "test"]},
            "experiments": {"a": exp("DFM+BGRU", 0.4), "b": exp("A_B & 50% {x}", 0.3)}}


def test_rows_follow_ccc_json_and_keep_undefined_values_as_none():
    rows = rt.table_rows(_report(), "concatenated")
    assert [label for label, _ in rows] == ["DFM+BGRU", "A_B & 50% {x}"]
    values = rows[0][1]
    assert values[("devel", "valence", "ccc")] == pytest.approx(0.4)
    assert values[("devel", "arousal", "pcc")] is None
    assert values[("test", "valence", "ccc")] == pytest.approx(-0.4)
    assert not any(k[0] == "train" for k in values)  # unlabelled partition left out
    assert rt.table_rows(_report(), "per_video_mean")[0][1][("devel", "valence", "ccc")] == pytest.approx(0.2)
    with pytest.raises(rt.ResultsTableError, match="unknown aggregation"):
        rt.table_rows(_report(), "median")


def test_markdown_table_columns_caption_and_bold_best():
    md = rt.markdown(_report(), ["concatenated"], source="results/toy_ds/ccc.json")
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert lines[0] == ("| Experiment | devel arousal CCC | devel arousal PCC | devel valence CCC | devel valence PCC"
                        " | test arousal CCC | test arousal PCC | test valence CCC | test valence PCC |")
    assert len(lines) == 2 + 2
    assert all(ln.count("|") == 10 for ln in lines)
    first = lines[2].split(" | ")
    assert first[0] == "| DFM+BGRU" and first[1] == "**0.600**" and first[2] == rt.MISSING
    assert "A\\_B & 50% {x}" in lines[3]  # `_` escaped for Markdown
    assert "frames concatenated over the videos of each partition" in md
    assert "devel: 3 videos; test: 1 video" in md and "Not scored (no labels): train" in md
    assert "results/toy\\_ds/ccc.json" in md


def test_latex_is_booktabs_escaped_and_structurally_sound():
    tex = rt.latex(_report(), source="results/toy_ds/ccc.json")
    assert tex.count(r"\begin{table}") == 2 == tex.count(r"\end{table}")
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 2
    assert r"A\_B \& 50\% \{x\}" in tex and "DFM+BGRU" in tex
    assert r"results/toy\_ds/ccc.json" in tex and "–" not in tex
    assert r"\label{tab:results-concatenated}" in tex and r"\label{tab:results-per-video-mean}" in tex
    assert r"computed per video, then averaged" in tex
    assert r"\textbf{0.600}" in tex and "$-$0.400" in tex
    # braces balance once escaped braces are removed
    plain = tex.replace(r"\{", "").replace(r"\}", "")
    body = "\n".join(ln for ln in plain.splitlines() if not ln.startswith("%"))
    assert body.count("{") == body.count("}")
    # every data row has as many cells as the column spec
    spec = re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex).group(1)
    for ln in tex.splitlines():
        if ln.startswith(("DFM", "A\\_B", "Experiment")):
            assert ln.endswith(r"\\") and ln.count(" & ") + 1 == len(spec), ln


def test_html_table_and_no_partition_scored():
    page = rt.html(_report(), ["concatenated"])
    assert page.startswith("<!DOCTYPE html>") and '<table class="results">' in page
    assert "<td>A_B &amp; 50% {x}</td>" in page and "<td><b>0.600</b></td>" in page
    rep = _report()
    rep["evaluate_settings"]["partitions"] = ["train"]
    assert "nothing to score" in rt.markdown(rep) and "nothing to score" in rt.latex(rep)


def _summary():
    faces = {"frames_decoded": 100, "detected": 50, "tracked": 20, "lost": 30, "multi_face_frames": 4}
    return {
        "dataset": "toy_ds", "problems": [],
        "excluded": [{"video": "v_test", "partition": "test", "stage": "evaluate", "reason": "no face in any frame"}],
        "videos": {
            "v_test": {"partition": "test", "faces": {**faces, "detected": 0, "tracked": 0, "lost": 100}},
            "v_train": {"partition": "train", "faces": {**faces, "side_conflict_frames": 3,
                                                          "lost_reasons": {"no face detected": 20, "shape residual": 10},
                                                          "multi_face_count": {"counted_frames": 25, "method": "every 4th frame"}}},
            "v_none": {"partition": "devel", "faces": None},
        },
    }


def test_quality_rows_and_markdown():
    rows = qt.quality_rows(_summary())
    assert [r["video"] for r in rows] == ["v_train", "v_none", "v_test"]  # train, devel, test
    tr = rows[0]
    assert tr["face_share"] == pytest.approx(0.7) and tr["lost"] == 30 and tr["side_conflict_frames"] == 3
    assert rows[1]["face_share"] is None and rows[2]["excluded"] == "evaluate: no face in any frame"
    md = qt.markdown(_summary())
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert lines[2] == ("| v\\_train | train | 100 | 70.0 % (low) | 30 (most: no face detected, 20) | 4 of 25 counted"
                        " | 3 | no |")
    assert lines[3].startswith("| v\\_none | devel | n/r | no faces table |")
    assert lines[4].endswith("| yes (evaluate: no face in any frame) |")
    assert "counted by every 4th frame" in md and "Numbers from summary.json" in md
    assert "background:#fde0dc" in qt.html(_summary())


def test_cli_writes_tables_and_names_a_bad_file(tmp_path):
    ccc = tmp_path / "ccc.json"
    ccc.write_text(json.dumps(_report()))
    out = {k: tmp_path / f"results.{k}" for k in ("md", "tex", "html")}
    cmd = [sys.executable, "-m", "affpipe", "results-table", "--ccc", str(ccc),
           *[a for k, p in out.items() for a in (f"--{k}", str(p))]]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert r"\toprule" in out["tex"].read_text() and "DFM+BGRU" in out["md"].read_text()
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(_summary()))
    res = subprocess.run([sys.executable, "-m", "affpipe", "quality-table", "--summary", str(summary),
                          "--md", str(tmp_path / "q.md")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "v\\_train" in (tmp_path / "q.md").read_text()
    bad = tmp_path / "other.json"
    bad.write_text("{}")
    res = subprocess.run([sys.executable, "-m", "affpipe", "results-table", "--ccc", str(bad), "--md",
                          str(tmp_path / "x.md")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "other.json" in res.stderr and "not an affpipe ccc.json" in res.stderr
    assert not (tmp_path / "x.md").exists()


def test_trace_figure_has_one_panel_per_experiment_and_dimension_with_the_label_in_each():
    import numpy as np

    from affpipe import plots

    n = 50
    t = np.arange(n) / 25.0
    true = np.stack([np.sin(t), np.cos(t)], axis=1)
    filled = np.zeros(n, bool)
    filled[:5] = True
    preds = [(f"exp{i}", true + 0.1 * i, filled, {"valence": 0.5 + i / 10, "arousal": None}) for i in range(3)]
    fig = plots.trace_figure("vid", "test", t, true, preds)
    axes = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert len(axes) == 3 * 2
    titles = [ax.get_title(loc="left") for ax in axes]
    assert titles[0] == "exp0: valence, CCC 0.50" and titles[1] == "exp0: arousal, CCC undefined"
    for ax in axes:  # label + solid prediction + dotted filled part in every panel
        assert len(ax.get_lines()) == 1 + 3
        assert ax.get_ylim() == pytest.approx(plots.VALUE_LIMITS)
    plots.plt.close(fig)


def test_ranking_figure_draws_every_series_per_level(tmp_path):
    from affpipe import plots

    level = {"T": 3, "chance": 0.5, "dr": {"accuracy": 0.8, "windows": 10, "pairs": 120},
             "ranksvm_upper_bound": {"accuracy": 0.99}, "similarity_baseline": {"accuracy": 0.7}}
    fig = plots.ranking_figure({"levels": {"T3": level, "T5": {**level, "T": 5}}, "videos": [{}, {}]})
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [0.7, 0.7, 0.8, 0.8, 0.99, 0.99]
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["T=3", "T=5"]
    assert any(ln.get_ydata()[0] == 0.5 for ln in ax.get_lines())  # the chance line
    plots.save(fig, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000
