"""Per-video tracking and data-quality table from ``report/summary.json`` (pure functions, no I/O).

What a researcher checks before trusting any score: per video its partition, frames decoded, the
share of frames with a face (detected or tracked), lost frames, frames where a full-frame detection
saw several faces, side-track conflicts (when the faces stage records them) and whether, and why,
the video was left out of scoring. Rows sorted by partition, then video.

* :func:`quality_rows` -- the rows as dicts;
* :func:`markdown`, :func:`html` -- the table with its caption.
"""

from __future__ import annotations

from typing import Any, Mapping

from affpipe.results_table import html_page, md_escape

PARTITION_ORDER = ("train", "devel", "test")
#: a face share below this is flagged in the table (the video's scores rest on few real frames)
LOW_FACE_SHARE = 0.8
COLUMNS = (
    ("video", "Video"), ("partition", "Partition"), ("frames_decoded", "Frames decoded"),
    ("face_share", "Face share"), ("lost", "Lost frames"), ("multi_face_frames", "Multi-face frames"),
    ("side_conflict_frames", "Side conflicts"), ("excluded", "Excluded (reason)"),
)
NOT_RECORDED = "n/r"
_TEXT_COLUMNS = ("video", "partition", "excluded")


def quality_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict per video with the keys of :data:`COLUMNS` (None = not recorded / no faces table)."""
    excluded: dict[str, list[str]] = {}
    for e in summary.get("excluded", []):
        excluded.setdefault(e["video"], []).append(f"{e.get('stage', '?')}: {e.get('reason', '?')}")
    rows = []
    for vid, entry in summary.get("videos", {}).items():
        faces = entry.get("faces") or {}
        n = faces.get("frames_decoded")
        found = (faces.get("detected") or 0) + (faces.get("tracked") or 0)
        multi = faces.get("multi_face_frames")
        mfc = faces.get("multi_face_count")
        rows.append({
            "video": vid,
            "partition": entry.get("partition"),
            "frames_decoded": n,
            "face_share": (found / n) if n else None,
            "lost": faces.get("lost"),
            "lost_top_reason": _top_reason(faces.get("lost_reasons")),
            "multi_face_frames": multi,
            "multi_face_method": (mfc or {}).get("method") if isinstance(mfc, Mapping) else None,
            "multi_face_counted": (mfc or {}).get("counted_frames") if isinstance(mfc, Mapping) else None,
            "side_conflict_frames": faces.get("side_conflict_frames"),
            "excluded": "; ".join(excluded.get(vid, [])) or None,
        })
    order = {p: i for i, p in enumerate(PARTITION_ORDER)}
    rows.sort(key=lambda r: (order.get(r["partition"], len(order)), str(r["partition"]), r["video"]))
    return rows


def _top_reason(reasons) -> tuple[str, int] | None:
    """The most frequent ``(reason, frames)`` of a ``{reason: frames}`` dict (summary key ``lost_reasons``)."""
    if not isinstance(reasons, Mapping) or not reasons:
        return None
    reason, n = max(reasons.items(), key=lambda kv: (kv[1], kv[0]))
    return str(reason), int(n)


def _cell(row: Mapping[str, Any], key: str) -> str:
    v = row[key]
    if key == "face_share":
        if v is None:
            return "no faces table"
        return f"{100 * v:.1f} %" + (" (low)" if v < LOW_FACE_SHARE else "")
    if key == "lost" and v and row.get("lost_top_reason"):
        reason, n = row["lost_top_reason"]
        return f"{v} (most: {reason}, {n})"
    if key == "excluded":
        return f"yes ({v})" if v else "no"
    if key == "multi_face_frames" and v is not None and row.get("multi_face_counted") is not None:
        return f"{v} of {row['multi_face_counted']} counted"
    if v is None:
        return NOT_RECORDED
    return str(v)


def caption(summary: Mapping[str, Any], source: str = "summary.json") -> str:
    ds = summary.get("dataset") or "dataset"
    rows = quality_rows(summary)
    methods = sorted({r["multi_face_method"] for r in rows if r["multi_face_method"]})
    text = (f"Tracking and data quality per video of {ds} ({len(rows)} videos). Face share: frames with a face "
            f"(detected or tracked) among the decoded frames, '(low)' below {100 * LOW_FACE_SHARE:.0f} %. "
            "Lost: frames without a face (with the most frequent reason when the summary records it). "
            "Multi-face: frames where a full-frame detection found more than one face (the tracker follows one)")
    text += f", counted by {', '.join(methods)}." if methods else "."
    text += (" Side conflicts: frames where the tracked face left its assigned side of a two-person video. "
             f"{NOT_RECORDED} = not recorded by this faces stage. Excluded: left out of scoring, with the stage "
             f"and reason. Numbers from {source}.")
    problems = summary.get("problems") or []
    if problems:
        text += f" {len(problems)} consistency problem(s): " + " | ".join(problems)
    return text


def markdown(summary: Mapping[str, Any], source: str = "summary.json") -> str:
    rows = quality_rows(summary)
    out = [f"# Data quality: {md_escape(summary.get('dataset') or 'dataset')}", "",
           md_escape(caption(summary, source)), "",
           "| " + " | ".join(h for _, h in COLUMNS) + " |",
           "|" + "|".join("---:" if k in ("frames_decoded", "face_share", "lost", "multi_face_frames",
                                           "side_conflict_frames") else "---" for k, _ in COLUMNS) + "|"]
    for r in rows:
        out.append("| " + " | ".join(md_escape(_cell(r, k)) for k, _ in COLUMNS) + " |")
    return "\n".join(out) + "\n"


def html(summary: Mapping[str, Any], source: str = "summary.json") -> str:
    import html as _html

    esc = _html.escape
    ds = summary.get("dataset") or "dataset"
    rows = quality_rows(summary)
    cls = {k: ' class="t"' if k in _TEXT_COLUMNS else "" for k, _ in COLUMNS}
    head = "<tr>" + "".join(f"<th{cls[k]}>{esc(h)}</th>" for k, h in COLUMNS) + "</tr>"
    trs = []
    for r in rows:
        flag = ' style="background:#fde0dc"' if r["excluded"] or (r["face_share"] is not None
                                                                  and r["face_share"] < LOW_FACE_SHARE) else ""
        trs.append(f"<tr{flag}>" + "".join(f"<td{cls[k]}>{esc(_cell(r, k))}</td>" for k, _ in COLUMNS) + "</tr>")
    body = [f"<h2>Data quality: {esc(ds)}</h2>",
            f'<table class="quality"><caption>{esc(caption(summary, source))}</caption>'
            f"<thead>{head}</thead><tbody>{''.join(trs)}</tbody></table>"]
    return html_page(f"Data quality: {ds}", body)
