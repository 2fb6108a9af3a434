"""affpipe.io.parquet.read_table: the table pyarrow.parquet.read_table gives, without importing pyarrow.dataset."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from affpipe.io.parquet import read_table

PACKAGE = Path(__file__).resolve().parent.parent / "affpipe"


def _table() -> pa.Table:
    table = pa.table({"video": ["a", "b", None], "frame": pa.array([0, 1, 2], pa.int32()),
                      "valence": [0.5, -0.25, None]})
    return table.replace_schema_metadata({b"format": b"affpipe-test", b"settings": b'{"x": 1}'})


def test_same_table_schema_and_metadata_as_pyarrow_read_table(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(_table(), path)
    got, ref = read_table(path), pq.read_table(path)
    assert got.equals(ref) and got.schema.equals(ref.schema, check_metadata=True)
    assert got.schema.metadata[b"format"] == b"affpipe-test"


def test_reading_does_not_import_pyarrow_dataset(tmp_path):
    """pyarrow.dataset costs ~0.3 s of CPU to import: the manifest, labels and predictions readers run in
    every torch job."""
    path = tmp_path / "t.parquet"
    pq.write_table(_table(), path)
    code = ("import sys; from affpipe.io.parquet import read_table; t = read_table(sys.argv[1]); "
            "print(t.num_rows, 'pyarrow.dataset' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert res.stdout.split() == ["3", "False"], res.stdout + res.stderr


def test_missing_and_non_parquet_files_raise_what_callers_catch(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_table(tmp_path / "missing.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet\n" * 10)
    with pytest.raises(ValueError):
        read_table(bad)


def test_no_affpipe_module_reads_through_pyarrow_dataset():
    """Whole-file reads go through affpipe.io.parquet.read_table, not pyarrow.parquet.read_table."""
    offenders = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")
                 if p != PACKAGE / "io" / "parquet.py" and re.search(r"\bpq\.read_table\(", p.read_text())]
    assert not offenders, offenders
