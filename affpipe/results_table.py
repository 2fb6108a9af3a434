"""Paper-style results tables from a ``ccc.json`` dict (pure functions; no torch, no file I/O).

One row per experiment; columns = for each scored partition (devel, test, ...), CCC and PCC of
arousal and valence, as in the AVEC/DFM papers. One table per aggregation (``concatenated``: the
metric over the frames of all videos of a partition; ``per_video_mean``: the metric per video, then
the mean). The best value of each column is bold. A partition no experiment could score (no labels)
is left out and named in the caption.

* :func:`table_rows` -- the numbers, as ``(label, {(partition, dimension, metric): value|None})``;
* :func:`markdown` -- GitHub-flavoured Markdown (caption as a paragraph above each table);
* :func:`latex` -- booktabs ``table`` environments, ready to ``\\input``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

#: table column order: arousal before valence, as in the AVEC papers
DIMENSIONS = ("arousal", "valence")
METRICS = ("ccc", "pcc")
AGGREGATIONS = ("concatenated", "per_video_mean")
DIGITS = 3
MISSING = "–"  # an undefined value (e.g. PCC of constant labels), never a silent 0
AGGREGATION_CAPTION = {
    "concatenated": "frames concatenated over the videos of each partition",
    "per_video_mean": "computed per video, then averaged over the videos of each partition",
}
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", MISSING: "--",
}
_MD_SPECIAL = "\\`*_[]|<>"


class ResultsTableError(ValueError):
    """The ccc.json dict lacks what a table needs (message names the key)."""


def scored_partitions(report: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``(scored, unscored)`` partitions of ``evaluate_settings.partitions``, in that order."""
    try:
        parts = list(report["evaluate_settings"]["partitions"])
        exps = report["experiments"]
    except KeyError as exc:
        raise ResultsTableError(f"ccc.json has no key {exc} (not an affpipe ccc.json?)") from None
    scored = [p for p in parts if any(e["partitions"].get(p, {}).get("scored") for e in exps.values())]
    return scored, [p for p in parts if p not in scored]


Row = tuple[str, dict[tuple[str, str, str], "float | None"]]


def table_rows(report: Mapping[str, Any], aggregation: str) -> list[Row]:
    """The values of one table: one ``(experiment label, values)`` per experiment, in ccc.json order.

    ``values[(partition, dimension, metric)]`` is a float, or None where undefined or not scored.
    """
    if aggregation not in AGGREGATIONS:
        raise ResultsTableError(f"unknown aggregation {aggregation!r} (one of {', '.join(AGGREGATIONS)})")
    parts, _ = scored_partitions(report)
    rows = []
    for name, exp in report["experiments"].items():
        values: dict[tuple[str, str, str], float | None] = {}
        for part in parts:
            dims = exp["partitions"].get(part, {}).get("dimensions", {})
            for dim in DIMENSIONS:
                entry = dims.get(dim, {})
                agg = entry.get(aggregation, {}) if entry.get("scored") else {}
                for m in METRICS:
                    v = agg.get(m)
                    values[(part, dim, m)] = None if v is None else float(v)
        rows.append((exp.get("label") or name, values))
    return rows


def _best(rows, key) -> float | None:
    vals = [v[key] for _, v in rows if v[key] is not None]
    return max(vals) if vals else None


def _video_counts(report: Mapping[str, Any], parts: Sequence[str]) -> str:
    first = next(iter(report["experiments"].values()))
    counts = []
    for p in parts:
        n = first["partitions"].get(p, {}).get("videos")
        counts.append(f"{p}: {n} video{'s' if n != 1 else ''}" if n is not None else p)
    return "; ".join(counts)


def caption(report: Mapping[str, Any], aggregation: str, source: str = "ccc.json") -> str:
    """Plain-text caption: the metrics, the aggregation, the partitions, the dataset and the source file."""
    parts, unscored = scored_partitions(report)
    ds = report.get("dataset") or "dataset"
    counts = _video_counts(report, parts)
    text = (f"CCC and PCC of arousal and valence on {ds}, {AGGREGATION_CAPTION[aggregation]}"
            f"{f' ({counts})' if counts else ''}. Best value per column in bold; {MISSING} = undefined.")
    if unscored:
        text += f" Not scored (no labels): {', '.join(unscored)}."
    return text + f" Numbers from {source}."


def _fmt(v: float | None) -> str:
    return MISSING if v is None else f"{v:.{DIGITS}f}"


def md_escape(text: str) -> str:
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in text)


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (``+`` and ``-`` need none in text mode)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def markdown(report: Mapping[str, Any], aggregations: Sequence[str] = AGGREGATIONS, source: str = "ccc.json") -> str:
    """One Markdown table per aggregation, each preceded by a bold title and its caption."""
    parts, _ = scored_partitions(report)
    out = [f"# Results: {md_escape(report.get('dataset') or 'dataset')}", ""]
    for agg in aggregations:
        rows = table_rows(report, agg)
        out += [f"**Table: {agg.replace('_', ' ')}.** {md_escape(caption(report, agg, source))}", ""]
        if not parts:
            out += ["No partition has labels: nothing to score.", ""]
            continue
        keys = [(p, d, m) for p in parts for d in DIMENSIONS for m in METRICS]
        head = ["Experiment"] + [f"{p} {d} {m.upper()}" for p, d, m in keys]
        out.append("| " + " | ".join(head) + " |")
        out.append("|---|" + "---:|" * len(keys))
        best = {k: _best(rows, k) for k in keys}
        for label, values in rows:
            cells = [md_escape(label)]
            for k in keys:
                s = _fmt(values[k])
                cells.append(f"**{s}**" if values[k] is not None and values[k] == best[k] else s)
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def latex(report: Mapping[str, Any], aggregations: Sequence[str] = AGGREGATIONS, source: str = "ccc.json") -> str:
    """booktabs ``table`` environments (one per aggregation), labelled ``tab:results-<aggregation>``.

    Needs ``\\usepackage{booktabs}`` in the preamble.
    """
    parts, _ = scored_partitions(report)
    ds = report.get("dataset") or "dataset"
    out = [f"% affpipe results tables for {latex_escape(ds)}, generated from {latex_escape(source)}",
           "% needs \\usepackage{booktabs}", ""]
    for agg in aggregations:
        rows = table_rows(report, agg)
        out += [r"\begin{table}[t]", r"\centering",
                rf"\caption{{{latex_escape(caption(report, agg, source))}}}",
                rf"\label{{tab:results-{agg.replace('_', '-')}}}"]
        if not parts:
            out += ["No partition has labels: nothing to score.", r"\end{table}", ""]
            continue
        keys = [(p, d, m) for p in parts for d in DIMENSIONS for m in METRICS]
        per_part = len(DIMENSIONS) * len(METRICS)
        out.append(r"\begin{tabular}{l" + "r" * len(keys) + "}")
        out.append(r"\toprule")
        out.append(" & " + " & ".join(rf"\multicolumn{{{per_part}}}{{c}}{{{latex_escape(p.capitalize())}}}"
                                      for p in parts) + r" \\")
        out.append(" ".join(rf"\cmidrule(lr){{{2 + i * per_part}-{1 + (i + 1) * per_part}}}"
                            for i in range(len(parts))))
        out.append(" & " + " & ".join(rf"\multicolumn{{{len(METRICS)}}}{{c}}{{{d.capitalize()}}}"
                                      for _ in parts for d in DIMENSIONS) + r" \\")
        out.append("Experiment & " + " & ".join(m.upper() for _ in parts for _ in DIMENSIONS for m in METRICS) + r" \\")
        out.append(r"\midrule")
        best = {k: _best(rows, k) for k in keys}
        for label, values in rows:
            cells = [latex_escape(label)]
            for k in keys:
                # a true minus sign (math mode), not a hyphen
                s = "--" if values[k] is None else _fmt(values[k]).replace("-", "$-$")
                cells.append(rf"\textbf{{{s}}}" if values[k] is not None and values[k] == best[k] else s)
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


HTML_STYLE = (
    "body{font-family:sans-serif;font-size:14px;margin:1em}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "th,td{padding:3px 9px;text-align:right}th:first-child,td:first-child,.t{text-align:left}"
    "thead tr:first-child th{border-top:2px solid #000}thead tr:last-child th{border-bottom:1px solid #000}"
    "tbody tr:last-child td{border-bottom:2px solid #000}caption{caption-side:top;text-align:left;"
    "max-width:60em;padding-bottom:0.4em}"
)


def html_page(title: str, body: Sequence[str]) -> str:
    """A small standalone HTML page (no external resources: the report is viewed offline)."""
    import html as _html

    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{_html.escape(title)}</title><style>{HTML_STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def html(report: Mapping[str, Any], aggregations: Sequence[str] = AGGREGATIONS, source: str = "ccc.json") -> str:
    """The same tables as :func:`markdown`, as a standalone HTML page (the report's view of them)."""
    import html as _html

    esc = _html.escape
    parts, _ = scored_partitions(report)
    ds = report.get("dataset") or "dataset"
    body = [f"<h2>Results: {esc(ds)}</h2>"]
    for agg in aggregations:
        rows = table_rows(report, agg)
        cap = f"<caption><b>{esc(agg.replace('_', ' '))}.</b> {esc(caption(report, agg, source))}</caption>"
        if not parts:
            body.append(f"<table>{cap}</table><p>No partition has labels: nothing to score.</p>")
            continue
        keys = [(p, d, m) for p in parts for d in DIMENSIONS for m in METRICS]
        per_part = len(DIMENSIONS) * len(METRICS)
        h1 = "<tr><th></th>" + "".join(f'<th colspan="{per_part}" style="text-align:center">{esc(p)}</th>'
                                       for p in parts) + "</tr>"
        h2 = "<tr><th></th>" + "".join(f'<th colspan="{len(METRICS)}" style="text-align:center">{d}</th>'
                                       for _ in parts for d in DIMENSIONS) + "</tr>"
        h3 = "<tr><th>Experiment</th>" + "".join(f"<th>{m.upper()}</th>" for _ in parts for _ in DIMENSIONS
                                                for m in METRICS) + "</tr>"
        best = {k: _best(rows, k) for k in keys}
        trs = []
        for label, values in rows:
            cells = [f"<td>{esc(label)}</td>"]
            for k in keys:
                s = esc(_fmt(values[k]))
                bold = values[k] is not None and values[k] == best[k]
                cells.append(f"<td><b>{s}</b></td>" if bold else f"<td>{s}</td>")
            trs.append("<tr>" + "".join(cells) + "</tr>")
        body.append(f'<table class="results">{cap}<thead>{h1}{h2}{h3}</thead><tbody>{"".join(trs)}</tbody></table>')
    return html_page(f"Results: {ds}", body)
