"""Compare the outputs of two workflow runs in different working directories, file by file.

Used by tests/test_slurm.py (a SLURM run of two of the tiny demo's experiments equals a local run of
all five) and tests/test_resume.py (a run killed and resumed equals an uninterrupted one; two fresh
runs are equal).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection
from pathlib import Path

#: provenance that differs between any two runs (wall-clock times, durations, input mtimes and the
#: fingerprints hashing them); everything else must be equal
VOLATILE_KEYS = {"created", "seconds", "train_s", "train_wall_s", "mtime", "fingerprint"}


def _normalize(value, work: Path):
    """`value` with provenance keys dropped and the run's working directory replaced by `<work>`
    (manifests and model files record absolute input paths); tensors and arrays as they are."""
    if isinstance(value, dict):
        value = {k.decode() if isinstance(k, bytes) else k: v for k, v in value.items()}
        if {"path", "size", "mtime"} <= set(value):
            # an input file's provenance: its size depends on the paths recorded inside that file
            value = {k: v for k, v in value.items() if k != "size"}
        return {k: _normalize(v, work) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, (list, tuple)):
        return type(value)(_normalize(v, work) for v in value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value.replace(str(work), "<work>")
        return _normalize(parsed, work) if isinstance(parsed, (dict, list)) else value.replace(str(work), "<work>")
    return value


def _same(a, b) -> bool:
    """Deep equality; tensors and arrays bit-identical (same dtype, NaN equal to NaN)."""
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor):
        if not (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape):
            return False
        return bool(torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                          and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and \
            np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a == b


def _h5_content(path: Path, work: Path) -> dict:
    """Every dataset of an HDF5 file (arrays) and every attribute (normalized)."""
    import h5py
    import numpy as np

    found = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found[name] = np.asarray(obj[()])
        found[f"{name}@attrs"] = _normalize({k: _attr(v) for k, v in obj.attrs.items()}, work)

    with h5py.File(path, "r") as f:
        found["/@attrs"] = _normalize({k: _attr(v) for k, v in f.attrs.items()}, work)
        f.visititems(visit)
    return found


def _attr(v):
    import numpy as np

    return v.tolist() if isinstance(v, np.ndarray) and v.dtype.kind in "OSU" else v


def _parquet_content(path: Path, work: Path) -> dict:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {"schema": table.schema.remove_metadata().to_string(),
            "metadata": _normalize(dict(table.schema.metadata or {}), work),
            "rows": _normalize(table.to_pylist(), work)}


def _content(path: Path, work: Path):
    if path.suffix == ".h5":
        return _h5_content(path, work)
    if path.suffix == ".parquet":
        return _parquet_content(path, work)
    if path.suffix == ".json":
        return _normalize(json.loads(path.read_text()), work)
    if path.suffix == ".pt":
        import torch

        return _normalize(torch.load(path, map_location="cpu", weights_only=True), work)
    return path.read_bytes()


#: Snakemake's own marker in a directory() output. It is written after the job, in Snakemake's
#: bookkeeping: a run SIGKILLed at that moment leaves a finished job without it (seen in
#: tests/test_resume.py); the folder's files, which are compared, are the job's outputs
SNAKEMAKE_MARKERS = (".snakemake_timestamp",)


def output_files(base: Path) -> set[str]:
    """Every file under ``base/results`` (relative paths), logs, benchmarks and Snakemake's markers
    excepted."""
    res = base / "results"
    return {str(p.relative_to(base)) for p in res.rglob("*")
            if p.is_file() and p.relative_to(res).parts[1] not in ("logs", "benchmarks")
            and p.name not in SNAKEMAKE_MARKERS}


#: files that draw or tabulate every experiment of the run (compared per experiment, in ccc.json, by
#: `assert_same_outputs` when a run trained only some of the experiments)
EVERY_EXPERIMENT = ("report/regression/", "report/results.")


def _ccc_of(content: dict, experiments) -> dict:
    """A ccc.json's content restricted to ``experiments``: their entries and summary rows (the config hash
    covers the experiment list, so it is left out)."""
    out = {k: v for k, v in content.items() if k not in ("experiments", "summary", "config_hash")}
    out["experiments"] = {n: content["experiments"].get(n) for n in experiments}
    out["summary"] = {k: ({n: v.get(n) for n in experiments} if isinstance(v, dict) else v)
                      for k, v in content["summary"].items()}
    return out


def assert_same_outputs(work: Path, ref: Path, *, what: str, part: bool = False,
                        experiments: Collection[str] | None = None) -> None:
    """Same files, same content: HDF5 datasets and model weights bit-identical, Parquet tables and
    JSON (ccc.json included) equal, pictures byte-identical; only provenance (times, durations,
    input mtimes, the working directory) may differ. With ``part``, ``work`` ran a part of ``ref``'s
    targets: each of its files must be among ``ref``'s and equal to it (ccc.json need not be there).
    With ``experiments``, ``work`` ran the same targets with only these of ``ref``'s experiments
    enabled: its files are among ``ref``'s; ccc.json must equal ``ref``'s for these experiments, and the
    report files that show every experiment (`EVERY_EXPERIMENT`) are not compared."""
    files = output_files(work)
    ref_files = output_files(ref)
    if part or experiments is not None:
        assert files <= ref_files, f"{what}: files only in the first {sorted(files - ref_files)}"
    else:
        assert files == ref_files, f"{what}: different files: only in the first {sorted(files - ref_files)}, " \
                                   f"only in the second {sorted(ref_files - files)}"
        assert any(f.endswith("/ccc.json") for f in files)
    compared = files
    if experiments is not None:
        ccc = [rel for rel in files if rel.endswith("/ccc.json")]
        assert ccc, f"{what}: no ccc.json"
        for rel in ccc:
            mine = _content(work / rel, work)
            assert set(mine["experiments"]) == set(experiments), rel
            assert _same(_ccc_of(mine, experiments), _ccc_of(_content(ref / rel, ref), experiments)), \
                f"{what}: {rel} differs for experiments {sorted(experiments)}"
        compared = {rel for rel in files if rel not in ccc
                    and not any(rel.split("/", 2)[2].startswith(p) for p in EVERY_EXPERIMENT)}
    differ = [rel for rel in sorted(compared) if not _same(_content(work / rel, work), _content(ref / rel, ref))]
    assert not differ, f"{what} outputs differ: {differ}"
    kinds = Counter(Path(rel).suffix for rel in files)
    assert kinds[".h5"] and kinds[".parquet"] and kinds[".pt"] and kinds[".json"], kinds
