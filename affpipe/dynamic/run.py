"""One video's dynamic store: plan the windows, compute them in worker processes, merge the parts.

Reads ``results/{ds}/static/{video}.h5`` (SFA/SFS per frame) as a stream and writes
``results/{ds}/dynamic/{video}.h5`` (layout: :mod:`affpipe.dynamic.store`).

Parallelism: the windows are split into ``threads`` contiguous ranges, each computed by its own
process (own Gram cache and a part file next to the output); the parts are then concatenated by
copying their compressed chunks. Memory per process is bounded by one block of windows
(:data:`affpipe.dynamic.windows.BLOCK_WINDOWS`), independent of the video length. BLAS stays
single-threaded everywhere, so the output does not depend on ``threads`` (bit for bit).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from affpipe.dynamic.store import DYNAMIC_STAGE, SOURCE, STORAGE_NOTE, dynamic_specs, encode_block

log = logging.getLogger(__name__)

#: uint8 value of one unit of the problem's pixel scale
PIXEL_SCALES = {"unit": 1.0 / 255.0, "byte": 1.0}
#: static rows decoded per read
READ_ROWS = 32
#: fewest windows worth a worker process of their own
MIN_WINDOWS_PER_PART = 128
#: skipped window frames listed in the log and the file attributes (the full list is frame[~valid])
MAX_LISTED = 50


# --------------------------------------------------------------------------------------------
# worker: one contiguous range of windows -> one part file
# --------------------------------------------------------------------------------------------
def _streams(keep) -> list[str]:
    """Static streams to compute: both when masks/DFM are wanted, else those of the kept images."""
    if "masks" in keep or "dfm" in keep:
        return ["sfa", "sfs"]
    return [SOURCE[n] for n in ("dfa", "dfs") if n in keep]


def run_part(job: dict) -> dict:
    """Compute the windows ending in ``[job["first_end"], job["last_end"]]`` into a part store.

    Runs in a worker process (or in-process for one thread). Returns a summary of the part (window
    counts and solver statistics) for the final file's attributes.
    """
    import numpy as np

    from affpipe.dynamic.windows import SlidingDynamicImages, WindowSpec
    from affpipe.io.h5store import StoreWriter, open_static
    from affpipe.progress import progress

    if job.get("configure_logging"):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with _blas_threads(job.get("blas_threads")):
        s = job["settings"]
        keep = s["keep"]
        spec = WindowSpec(s["T"], s["stride"], s["hop"])
        streams = _streams(keep)
        with open_static(job["static"]) as reader:
            size = int(reader.h5.attrs["size"])
            frames = reader.frames.astype(np.int64)
            valid = reader.valid
            engine = SlidingDynamicImages(
                spec,
                {n: (size, size, 3) for n in streams},
                solver=s["solver"],
                lam=float(s["lambda"]),
                pixel_scale=PIXEL_SCALES[s["pixel_scale"]],
                want_dynamic="masks" in keep or "dfm" in keep,
                mask_tolerance=int(s["mask_tolerance"]),
                require=s["require_valid"],
                first_frame=job["first_frame"],
                first_end=job["first_end"],
                last_end=job["last_end"],
            )
            lo = int(np.searchsorted(frames, engine.range_start_frame(job["first_end"]), side="left"))
            hi = int(np.searchsorted(frames, job["last_end"], side="right"))
            summary = {"windows": 0, "valid": 0, "ranked": [], "kkt": [], "at_bound": [], "iterations": []}
            specs = dynamic_specs(size, keep=keep, storage=s["storage"])
            with StoreWriter(job["part"], specs, stage=DYNAMIC_STAGE, settings=s, inputs=[job["static"]],
                             compression=s["compression"], compression_level=s["compression_level"]) as writer:

                def write(block) -> None:
                    writer.append(**encode_block(block, keep=keep, storage=s["storage"]))
                    summary["windows"] += len(block.ends)
                    summary["valid"] += int(block.valid.sum())
                    for stats in block.stats.values():
                        if "kkt_residual" in stats:
                            ok = block.valid
                            summary["kkt"].append(float(np.max(stats["kkt_residual"][ok], initial=0.0)))
                            summary["ranked"] += stats["ranked_share"][ok].tolist()
                            summary["at_bound"] += stats["at_bound_share"][ok].tolist()
                            summary["iterations"] += stats["iterations"][ok].tolist()
                    bar.update(len(block.ends))

                n_windows = job["n_windows"]
                bar = progress(total=n_windows, desc=job["desc"], unit="window")
                with bar:
                    for a in range(lo, hi, READ_ROWS):
                        b = min(a + READ_ROWS, hi)
                        batch = {n: reader[n][a:b] for n in streams}
                        for i in range(b - a):
                            imgs = {n: batch[n][i] for n in streams}
                            for block in engine.push(int(frames[a + i]), bool(valid[a + i]), imgs):
                                write(block)
                    for block in engine.finish():
                        write(block)
            if summary["windows"] != job["n_windows"]:
                raise RuntimeError(f"part produced {summary['windows']} windows, planned {job['n_windows']}")
    return summary


@contextlib.contextmanager
def _blas_threads(n):
    """Limit BLAS threads in this process (threadpoolctl ships with scikit-learn)."""
    if not n:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn always brings it
        yield
        return
    with threadpool_limits(limits=int(n)):
        yield


def _run_parts(jobs: list[dict]) -> list[dict]:
    """Run the parts: in this process when there is one, else one spawned process per part."""
    if len(jobs) <= 1:
        return [run_part(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # BLAS threads per worker: set before the spawned interpreters import numpy
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    try:
        for k in saved:
            os.environ[k] = str(jobs[0]["blas_threads"])
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=len(jobs), mp_context=ctx) as pool:
            futures = [pool.submit(run_part, job) for job in jobs]
            return [f.result() for f in futures]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------------------------
def dynamic_store(static: str | os.PathLike, out: str | os.PathLike, settings: dict[str, Any], *,
                  threads: int = 1) -> dict[str, Any]:
    """Write the dynamic store of one video.

    Parameters
    ----------
    static : path
        The video's static store.
    out : path
        Dynamic store to write (atomically; part files of a killed earlier run are removed first).
    settings : dict
        Validated ``dynamic`` settings.
    threads : int, keyword-only
        Worker processes (>= 1); short videos get fewer (:data:`MIN_WINDOWS_PER_PART`).

    Returns
    -------
    dict
        The file attributes written (window counts, solver statistics, settings echoed).
    """
    import numpy as np

    from affpipe.dynamic import rankpool
    from affpipe.dynamic.windows import WindowSpec, dense_validity, window_validity
    from affpipe.errors import AffpipeError
    from affpipe.io.atomic import clear_stale
    from affpipe.io.h5store import StoreReader, StoreWriter, open_static

    keep = settings["keep"]
    spec = WindowSpec(settings["T"], settings["stride"], settings["hop"])
    with open_static(static) as reader:
        size = int(reader.h5.attrs["size"])
        frames = reader.frames.astype(np.int64)
        valid = reader.valid
    if frames.size and np.any(np.diff(frames) <= 0):
        raise AffpipeError("static store's frame indices are not strictly increasing", path=static)
    first, ok = dense_validity(frames, valid)
    last = first + ok.size - 1
    ends = spec.ends(first, last)
    win_ok = window_validity(ok, first, ends, spec, require=settings["require_valid"])
    n = ends.size
    skipped = ends[~win_ok]
    log.info(
        "dynamic: %s: %d frames (%d with a face), T=%d stride=%d hop=%d (span %d): %d windows, %d skipped "
        "(a required frame has no face), solver %s, lambda %g, pixel scale %s, keep %s, %d thread(s)",
        static, ok.size, int(ok.sum()), spec.length, spec.stride, spec.hop, spec.span, n, skipped.size,
        settings["solver"], settings["lambda"], settings["pixel_scale"], ",".join(keep), threads,
    )
    if n == 0:
        log.warning("dynamic: %s has %d frames, fewer than one window (%d): the output has no rows",
                    static, ok.size, spec.span)
    elif skipped.size:
        listed = ", ".join(map(str, skipped[:MAX_LISTED])) + (" ..." if skipped.size > MAX_LISTED else "")
        log.info("dynamic: skipped windows (last frame): %s", listed)

    # every part re-reads the (T-1)*stride frames before its first window and costs a process start:
    # short videos get fewer parts. BLAS stays single-threaded everywhere; the output agrees across
    # thread counts to float32 rounding (bit for bit only for the same count: docs/dynamic.md)
    n_parts = max(1, min(threads, -(-n // MIN_WINDOWS_PER_PART)))
    bounds = np.array_split(np.arange(n), n_parts) if n else [np.arange(0)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # parts of a killed earlier run of this video, and the temporaries of parts it was writing
    clear_stale(out, ("{name}.part*-*.h5", "{name}.part*-*.h5.tmp-*"))
    jobs = []
    for i, idx in enumerate(bounds):
        if idx.size == 0:
            continue
        jobs.append({
            "static": str(static),
            "part": str(out.with_name(f"{out.name}.part{i}-{os.getpid()}.h5")),
            "settings": settings,
            "first_frame": first,
            "first_end": int(ends[idx[0]]),
            "last_end": int(ends[idx[-1]]),
            "n_windows": int(idx.size),
            "desc": "dynamic" if n_parts == 1 else f"dynamic {i + 1}/{n_parts}",
            "blas_threads": 1,
            "configure_logging": n_parts > 1,
        })
    parts = [Path(j["part"]) for j in jobs]
    try:
        summaries = _run_parts(jobs)
        ranked = np.array([v for s in summaries for v in s["ranked"]])
        at_bound = np.array([v for s in summaries for v in s["at_bound"]])
        iters = np.array([v for s in summaries for v in s["iterations"]])
        kkt = max((v for s in summaries for v in s["kkt"]), default=float("nan"))
        pixel_scale = PIXEL_SCALES[settings["pixel_scale"]]
        attrs = {
            "size": size,
            "window_T": spec.length,
            "window_stride": spec.stride,
            "window_hop": spec.hop,
            "window_span": spec.span,
            "first_frame": first,
            "frames_before_first_window": min(spec.span - 1, ok.size),
            "n_windows": n,
            "n_valid_windows": int(win_ok.sum()),
            "n_skipped_windows": int(skipped.size),
            "skipped_window_frames_first": [int(v) for v in skipped[:MAX_LISTED]],
            "require_valid": settings["require_valid"],
            "solver": settings["solver"],
            "lambda": float(settings["lambda"]),
            "gamma": rankpool.rank_gamma(spec.length),
            "C": rankpool.rank_gamma(spec.length) / float(settings["lambda"]),
            "pixel_scale": pixel_scale,
            "pixel_scale_name": settings["pixel_scale"],
            "pixel_scale_note": "dynamic images are solutions for pixel values uint8 * pixel_scale",
            "kkt_tolerance": rankpool.KKT_TOLERANCE,
            "kkt_residual_max": kkt,
            "kkt_residual_note": "measured against the problem as solved, whose Gram matrix holds float32 dot products "
            "of the frame differences; against the float64 Gram matrix the residual is up to ~1e-7 (see docs/dynamic.md)",
            "ranked_share_mean": float(ranked.mean()) if ranked.size else float("nan"),
            "at_bound_share_mean": float(at_bound.mean()) if at_bound.size else float("nan"),
            "solver_iterations_mean": float(iters.mean()) if iters.size else float("nan"),
            "storage": settings["storage"],
            "storage_note": STORAGE_NOTE[settings["storage"]],
            "mask_tolerance": int(settings["mask_tolerance"]),
            "threads": threads,
        }
        specs = dynamic_specs(size, keep=keep, storage=settings["storage"])
        with StoreWriter(out, specs, stage=DYNAMIC_STAGE, settings=settings, inputs=[static], attrs=attrs,
                         compression=settings["compression"], compression_level=settings["compression_level"]) as writer:
            for part in parts:
                with StoreReader(part, stage=DYNAMIC_STAGE) as r:
                    writer.append_from(r)
        with StoreReader(out, stage=DYNAMIC_STAGE) as r:
            if not np.array_equal(r.frames, ends) or not np.array_equal(r.valid, win_ok):
                raise RuntimeError("dynamic: merged windows differ from the plan (internal error)")
    finally:
        for part in parts:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
    if settings["solver"] == "exact" and np.isfinite(kkt) and kkt > rankpool.KKT_TOLERANCE:
        log.warning("dynamic: largest KKT residual %.3g exceeds %.1g (numerically degenerate windows)", kkt,
                    rankpool.KKT_TOLERANCE)
    return attrs
