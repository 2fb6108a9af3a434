"""``affpipe inspect FILE``: print what an affpipe output file holds.

* ``.h5``: file attributes (provenance: affpipe version, stage, settings, inputs, creation time),
  then every dataset with shape, dtype, chunking, compression, on-disk size and attributes, then a
  few statistics (rows, frame range, share of valid rows). Works on any HDF5 file; a file that is
  not an affpipe store is flagged as such.
* ``.parquet``: rows, row groups, the schema (the 68 ``x``/``y`` landmark columns summarised), the
  key/value metadata, and value counts of low-cardinality text columns (e.g. ``status``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

MAX_ATTR_CHARS = 300  # longer attribute values are shortened in the listing
MAX_VALUE_COUNTS = 12  # text columns with more distinct values get no value counts


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="print datasets/columns, shapes, dtypes, attributes and provenance of an .h5 or .parquet file",
        description="Print the layout, attributes/metadata and a few statistics of an affpipe output file.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help=".h5 or .parquet file(s)")
    p.set_defaults(func=handler)


def _short(value: Any) -> str:
    import numpy as np

    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        text = f"array{value.shape} {value.dtype}" if value.size > 8 else np.array2string(value, separator=", ")
    else:
        text = str(value)
    return text if len(text) <= MAX_ATTR_CHARS else text[:MAX_ATTR_CHARS] + f"... ({len(text)} chars)"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def inspect_h5(path: Path, out: Callable[[str], None] = print) -> None:
    """Print an HDF5 file's provenance, datasets and statistics."""
    import h5py
    import numpy as np

    from affpipe.errors import AffpipeError
    from affpipe.io.h5store import FORMAT_NAME

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise AffpipeError(f"cannot open as HDF5 (not HDF5, or truncated/corrupt: {exc})", path=path) from None
    with f:
        out(f"{path}  ({_human(path.stat().st_size)})")
        is_store = f.attrs.get("format") == FORMAT_NAME
        if not is_store:
            out("  NOTE: not an affpipe store (no format='affpipe-h5store' attribute)")
        out("file attributes:")
        for key, value in f.attrs.items():
            if key in ("settings", "inputs") and isinstance(value, str):
                try:
                    parsed = json.loads(value)
                except json.JSONDecodeError:
                    parsed = None
                if key == "settings" and isinstance(parsed, dict):
                    out(f"  {key}:")
                    for k, v in parsed.items():
                        out(f"    {k} = {json.dumps(v)}")
                    continue
                if key == "inputs" and isinstance(parsed, list):
                    out(f"  {key}:")
                    for item in parsed:
                        out(f"    {item.get('path')}  size={item.get('size')}  mtime={item.get('mtime')}")
                    continue
            if key == "sfs_regions" and isinstance(value, str):
                regions = json.loads(value)
                out(f"  {key}: " + ", ".join(f"{r['label']}={r['name']}{tuple(r['rgb'])}" for r in regions))
                continue
            out(f"  {key}: {_short(value)}")
        out("datasets:")
        datasets: list[tuple[str, h5py.Dataset]] = []

        def walk(group, prefix=""):  # .items() keeps creation order in files written with track_order
            for name, obj in group.items():
                if isinstance(obj, h5py.Dataset):
                    datasets.append((prefix + name, obj))
                elif isinstance(obj, h5py.Group):
                    walk(obj, prefix + name + "/")

        walk(f)
        for name, ds in datasets:
            raw = ds.size * ds.dtype.itemsize
            stored = ds.id.get_storage_size()
            comp = ds.compression or "none"
            if ds.compression_opts is not None:
                comp += f"({ds.compression_opts})"
            ratio = f", ratio {raw / stored:.2f}" if stored else ""
            out(f"  /{name}: shape={ds.shape} dtype={ds.dtype} chunks={ds.chunks} compression={comp} "
                f"stored={_human(stored)} raw={_human(raw)}{ratio}")
            for key, value in ds.attrs.items():
                out(f"      {key}: {_short(value)}")
        out("statistics:")
        n = None
        if "frame" in f:
            frames = f["frame"][...]
            n = len(frames)
            if n:
                out(f"  rows: {n}, frame {int(frames.min())}..{int(frames.max())}")
            else:
                out("  rows: 0")
        if "valid" in f:
            valid = f["valid"][...].astype(bool)
            if len(valid):
                out(f"  valid: {int(valid.sum())}/{len(valid)} ({100.0 * valid.mean():.1f} %)")
                invalid = np.flatnonzero(~valid)
                if invalid.size and "frame" in f:
                    fr = f["frame"][...][invalid]
                    shown = ", ".join(map(str, fr[:10])) + (" ..." if fr.size > 10 else "")
                    out(f"  invalid frames: {shown}")
        if n is None:
            out("  (no `frame` dataset)")


def inspect_parquet(path: Path, out: Callable[[str], None] = print) -> None:
    """Print a Parquet file's rows, schema, metadata and text-column value counts."""
    import re

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from affpipe.errors import AffpipeError

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise AffpipeError(f"cannot read as Parquet ({exc})", path=path) from None
    md = pf.metadata
    out(f"{path}  ({_human(path.stat().st_size)})")
    out(f"rows: {md.num_rows}, row groups: {md.num_row_groups}, columns: {md.num_columns}, created by: {md.created_by}")
    out("schema:")
    schema = pf.schema_arrow
    groups: dict[tuple[str, str], list[int]] = {}
    for field in schema:
        m = re.fullmatch(r"([xy])(\d+)", field.name)
        if m:
            groups.setdefault((m.group(1), str(field.type)), []).append(int(m.group(2)))
            continue
        out(f"  {field.name}: {field.type}")
    for (axis, typ), idx in groups.items():
        out(f"  {axis}{min(idx)}..{axis}{max(idx)}: {typ} ({len(idx)} columns)")
    meta = {k.decode(): v.decode("utf-8", "replace") for k, v in (schema.metadata or {}).items() if k != b"ARROW:schema"}
    if meta:
        out("metadata:")
        for k, v in meta.items():
            out(f"  {k}: {_short(v)}")
    text_cols = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                 or pa.types.is_dictionary(f.type)]
    if text_cols:
        out("values:")
        table = pf.read(columns=text_cols)
        for name in text_cols:
            counts = pc.value_counts(table[name]).to_pylist()
            if len(counts) <= MAX_VALUE_COUNTS:
                out(f"  {name} counts: " + ", ".join(f"{c['values']}={c['counts']}" for c in counts))


def handler(args: argparse.Namespace) -> int:
    from affpipe.errors import AffpipeError

    for i, path in enumerate(args.files):
        if i:
            print()
        if not path.is_file():
            raise AffpipeError("file does not exist", path=path)
        suffix = path.suffix.lower()
        if suffix in (".h5", ".hdf5", ".hdf"):
            inspect_h5(path)
        elif suffix == ".parquet":
            inspect_parquet(path)
        else:
            raise AffpipeError(f"don't know how to inspect a {suffix or 'suffix-less'} file (expected .h5 or .parquet)", path=path)
    return 0
