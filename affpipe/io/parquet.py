"""Reading one Parquet file whole, for the readers of the manifest, labels and predictions tables."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq


def read_table(path: str | os.PathLike) -> pa.Table:
    """The table in the Parquet file ``path``: the same table, schema and metadata as
    ``pyarrow.parquet.read_table(path)``.

    ``read_table`` goes through ``pyarrow.dataset``, whose import costs about 0.3 s of CPU: in every
    job that reads the manifest (each torch job), a tenth of a small job's time. ``ParquetFile``
    reads a single file without it. Raises what ``ParquetFile`` raises: ``FileNotFoundError``, or
    ``pyarrow.ArrowInvalid`` (a ``ValueError``) for a file that is not Parquet.
    """
    with pq.ParquetFile(path) as pf:
        return pf.read()
