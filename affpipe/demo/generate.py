"""Generate the demo dataset: videos, per-frame labels and ground truth, in the ``csv`` adapter's layout.

Output folder (``out``)::

    videos.csv                 video,path,partition,labels,subject (paths relative to ``out``)
    unlabelled.csv             the same columns for the first ``unlabelled_videos`` test videos, with an
                               empty labels column: the table of the demo's unlabelled second dataset
                               (``datasets.demo_unlabelled``, predicted by the demo's trained models)
    videos/<video>.mp4         the animated face videos (or .avi with codec mjpg)
    labels/<video>.csv         time_s,valence,arousal - one row per frame, at the frame times
    truth/<video>.parquet      per frame: valence, arousal, head motion and the 68 rendered landmark
                               positions (x0..x67, y0..y67, frame pixels) - a tracker's ground truth
    truth.json                 seed, settings, codec, per-identity source provenance and valence
                               range, per-video identity and partition
    preview.png                contact sheet: every identity at its extreme valence/arousal

The whole folder is generated next to ``out`` under a temporary name and renamed into place at the
end, so an interrupted run never leaves a half-written dataset under the final name.

Determinism: each video's randomness comes from ``SeedSequence([seed, crc32(identity), k])``;
the codecs used are deterministic, so the same settings give byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from affpipe.demo.expression import ExpressionStrengths, displace_landmarks, measure, valence_floor
from affpipe.demo.identity import Identity
from affpipe.demo.render import Rig, add_sensor_noise, build_rig, render_frame
from affpipe.demo.sources import identity_slug, load_source_face
from affpipe.demo.traces import affect_trace, smooth_trace
from affpipe.demo.warp import similarity_matrix
from affpipe.errors import ConfigError, VideoError

log = logging.getLogger("affpipe.demo")

PARTITIONS = ("train", "devel", "test")
#: A broad-smile photo's valence range is [v_min, 1]; v_min is capped here so every identity keeps
#: at least this much valence range (the corner drop may then exceed max_corner_drop slightly).
MAX_VALENCE_FLOOR = 0.5
#: Head-motion parameters are clipped at this many standard deviations.
MOTION_CLIP_SD = 3.0
#: Decimal places of the label CSVs.
LABEL_DECIMALS = 6


@dataclass(frozen=True)
class Codec:
    """A video codec choice: OpenCV fourcc, file extension and VideoWriter backend."""

    fourcc: str
    ext: str
    backend: str  # "ffmpeg" or "opencv_mjpeg"


CODECS: dict[str, Codec] = {
    "mp4v": Codec("mp4v", "mp4", "ffmpeg"),
    "mjpg": Codec("MJPG", "avi", "opencv_mjpeg"),
}


def assign_partitions(identities: list[str], partitions: dict[str, list[str]]) -> dict[str, str]:
    """Map each identity to its partition.

    Raises
    ------
    ConfigError
        If an identity is in no partition or in more than one, or two identities share a slug.
    """
    out: dict[str, str] = {}
    for name in identities:
        found = [p for p in PARTITIONS if name in partitions.get(p, [])]
        if len(found) != 1:
            where = "no partition" if not found else f"several partitions ({', '.join(found)})"
            raise ConfigError(
                f"demo identity {name!r} is in {where}",
                hint="list every demo identity in exactly one of demo.partitions.train/devel/test",
            )
        out[name] = found[0]
    slugs: dict[str, str] = {}
    for name in identities:
        s = identity_slug(name)
        if s in slugs:
            raise ConfigError(f"demo identities {slugs[s]!r} and {name!r} map to the same video-id prefix {s!r}")
        slugs[s] = name
    return out


def video_seed(seed: int, identity: str, k: int) -> np.random.SeedSequence:
    """The seed sequence of video ``k`` of ``identity`` (independent of the other identities)."""
    return np.random.SeedSequence([int(seed), zlib.crc32(identity.encode("utf-8")), int(k)])


@dataclass
class VideoPlan:
    """Everything random about one video, drawn up front (pure, from the seed).

    Attributes
    ----------
    valence, arousal : (T,) float64 in [-1, 1]
    motion : (T, 4) float64 - shift x, shift y (pixels), rotation (radians), scale (factor)
    noise_seed : SeedSequence for the per-frame sensor noise
    """

    valence: np.ndarray
    arousal: np.ndarray
    motion: np.ndarray
    noise_seed: np.random.SeedSequence


def plan_video(
    ss: np.random.SeedSequence,
    *,
    n_frames: int,
    fps: float,
    frame_width: int,
    valence_min: float,
    traces: dict[str, Any],
    head_motion: dict[str, Any],
) -> VideoPlan:
    """Draw one video's valence/arousal traces and head motion.

    Parameters
    ----------
    ss : numpy.random.SeedSequence
    n_frames : int, keyword-only
    fps : float, keyword-only
    frame_width : int, keyword-only
    valence_min : float, keyword-only
        The identity's valence floor; the trace is mapped linearly from [-1, 1] to [valence_min, 1].
    traces, head_motion : dict, keyword-only
        The ``traces`` and ``head_motion`` sections of the demo settings.

    Returns
    -------
    VideoPlan
    """
    trace_ss, motion_ss, noise_ss = ss.spawn(3)
    rng = np.random.default_rng(trace_ss)
    dt = 1.0 / fps
    common = {"dt": dt, "smooth_s": traces["smooth_s"], "gain": traces["gain"], "rng": rng}
    v = affect_trace(n_frames, tau_s=traces["valence_tau_s"], **common)
    a = affect_trace(n_frames, tau_s=traces["arousal_tau_s"], **common)
    v = valence_min + (1.0 - valence_min) * (v + 1.0) / 2.0
    mrng = np.random.default_rng(motion_ss)
    sds = np.array(
        [
            head_motion["translation"] * frame_width,
            head_motion["translation"] * frame_width,
            np.deg2rad(head_motion["rotation_deg"]),
            head_motion["scale"],
        ]
    )
    raw = np.stack(
        [
            smooth_trace(n_frames, dt=dt, tau_s=head_motion["tau_s"], smooth_s=head_motion["smooth_s"], rng=mrng)
            for _ in range(4)
        ],
        axis=1,
    )
    motion = np.clip(raw, -MOTION_CLIP_SD, MOTION_CLIP_SD) * sds
    motion[:, 3] = np.exp(motion[:, 3])
    return VideoPlan(valence=v, arousal=a, motion=motion, noise_seed=noise_ss)


def motion_matrix(rig: Rig, params: np.ndarray) -> np.ndarray:
    """(2, 3) head-motion similarity (canvas pixels) from one row of :attr:`VideoPlan.motion`."""
    return similarity_matrix(center=rig.head_center, angle_rad=params[2], scale=params[3], shift=params[:2])


def load_identities(settings: dict[str, Any], strengths: ExpressionStrengths) -> list[Identity]:
    """Load every configured identity's photo, detect its landmarks and build its rig."""
    parts = assign_partitions(settings["identities"], settings["partitions"])
    size = (settings["frame_width"], settings["frame_height"])
    out = []
    for name in settings["identities"]:
        face = load_source_face(name)
        rig = build_rig(face.image, face.landmarks, out_size=size, face_width_fraction=settings["face_width_fraction"], strengths=strengths)
        vmin = min(valence_floor(measure(rig.landmarks), strengths), MAX_VALENCE_FLOOR)
        log.info("identity %s (%s): %s, valence range [%.2f, 1]", name, parts[name], face.source.media, vmin)
        out.append(Identity(name=name, slug=identity_slug(name), partition=parts[name], face=face, rig=rig, valence_min=vmin))
    return out


def _open_writer(path: Path, codec: Codec, fps: float, size: tuple[int, int]):
    import cv2

    backend = cv2.CAP_FFMPEG if codec.backend == "ffmpeg" else cv2.CAP_OPENCV_MJPEG
    writer = cv2.VideoWriter(os.fspath(path), backend, cv2.VideoWriter_fourcc(*codec.fourcc), float(fps), size)
    if not writer.isOpened():
        raise VideoError(f"OpenCV cannot open a {codec.fourcc} video writer ({codec.backend} backend)", path=path)
    return writer


def _count_frames(path: Path) -> int:
    from affpipe.io.video import iter_frames

    n = 0
    for n, _, _ in iter_frames(path):
        pass
    return n + 1


def _labels_csv(times: np.ndarray, valence: np.ndarray, arousal: np.ndarray) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["time_s", "valence", "arousal"])
    for row in zip(times, valence, arousal):
        w.writerow([f"{x:.{LABEL_DECIMALS}f}" for x in row])
    return buf.getvalue()


def _truth_table(times, plan: VideoPlan, landmarks: np.ndarray):
    import pyarrow as pa

    cols: dict[str, Any] = {
        "frame": pa.array(np.arange(len(times), dtype=np.int32)),
        "time_s": pa.array(times),
        "valence": pa.array(plan.valence),
        "arousal": pa.array(plan.arousal),
        "shift_x": pa.array(plan.motion[:, 0].astype(np.float32)),
        "shift_y": pa.array(plan.motion[:, 1].astype(np.float32)),
        "rotation_deg": pa.array(np.rad2deg(plan.motion[:, 2]).astype(np.float32)),
        "scale": pa.array(plan.motion[:, 3].astype(np.float32)),
    }
    for i in range(landmarks.shape[1]):
        cols[f"x{i}"] = pa.array(landmarks[:, i, 0].astype(np.float32))
    for i in range(landmarks.shape[1]):
        cols[f"y{i}"] = pa.array(landmarks[:, i, 1].astype(np.float32))
    return pa.table(cols)


def render_video(
    identity: Identity,
    plan: VideoPlan,
    path: Path,
    *,
    strengths: ExpressionStrengths,
    fps: float,
    noise_sigma: float,
    codec: Codec,
) -> np.ndarray:
    """Render and encode one video.

    Returns
    -------
    landmarks : (T, 68, 2) float64
        Where the landmarks were rendered in each frame.
    """
    rig = identity.rig
    targets = displace_landmarks(rig.landmarks, plan.valence, plan.arousal, strengths=strengths)
    noise_rng = np.random.default_rng(plan.noise_seed)
    writer = _open_writer(path, codec, fps, rig.out_size)
    shown = np.empty_like(targets)
    try:
        for t in range(len(targets)):
            frame, shown[t] = render_frame(rig, targets[t], motion_matrix(rig, plan.motion[t]))
            writer.write(add_sensor_noise(frame, sigma=noise_sigma, rng=noise_rng))
    finally:
        writer.release()
    return shown


class _VideoJob:
    """What every video of one :func:`generate_demo` call shares (inherited by forked workers)."""

    def __init__(self, identities: list[Identity], settings: dict[str, Any], strengths: ExpressionStrengths,
                 codec: Codec, tmp: Path):
        self.identities, self.settings, self.strengths, self.codec, self.tmp = identities, settings, strengths, codec, tmp

    def __call__(self, task: tuple[int, int]) -> tuple[list[str], dict[str, Any]]:
        """Render, check and label video ``k`` of identity ``i``; returns its ``videos.csv`` row and summary."""
        from affpipe import __version__
        from affpipe.io.atomic import write_parquet

        i, k = task
        ident, settings, codec, tmp = self.identities[i], self.settings, self.codec, self.tmp
        n_frames, fps = int(settings["frames_per_video"]), float(settings["fps"])
        times = np.arange(n_frames) / fps
        vid = f"{ident.slug}_{k + 1:02d}"
        plan = plan_video(
            video_seed(settings["seed"], ident.name, k),
            n_frames=n_frames,
            fps=fps,
            frame_width=settings["frame_width"],
            valence_min=ident.valence_min,
            traces=settings["traces"],
            head_motion=settings["head_motion"],
        )
        vpath = tmp / "videos" / f"{vid}.{codec.ext}"
        shown = render_video(ident, plan, vpath, strengths=self.strengths, fps=fps,
                             noise_sigma=settings["noise_sigma"], codec=codec)
        decoded = _count_frames(vpath)
        if decoded != n_frames:
            raise VideoError(f"wrote {n_frames} frames but {decoded} decode", path=vpath)
        (tmp / "labels" / f"{vid}.csv").write_text(_labels_csv(times, plan.valence, plan.arousal))
        write_parquet(
            _truth_table(times, plan, shown),
            tmp / "truth" / f"{vid}.parquet",
            metadata={"video": vid, "identity": ident.name, "generator": f"affpipe {__version__} demo"},
        )
        row = [vid, f"videos/{vid}.{codec.ext}", ident.partition, f"labels/{vid}.csv", ident.slug]
        return row, {"video": vid, "identity": ident.name, "partition": ident.partition, "n_frames": n_frames}


_JOB: _VideoJob | None = None  # the job of a forked worker (set before the fork)


def _run_task(task: tuple[int, int]):
    assert _JOB is not None
    return _JOB(task)


def _map_videos(job: _VideoJob, tasks: list[tuple[int, int]], *, workers: int, on_video):
    """``job(task)`` for every task, in task order: in this process, or in ``workers`` forked ones."""
    global _JOB
    workers = max(1, min(int(workers), len(tasks)))
    if workers == 1 or not hasattr(os, "fork"):
        for task in tasks:
            yield job(task)
            on_video()
        return
    import multiprocessing

    import cv2

    _JOB = job
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one per worker: the workers share the cores
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for result in pool.imap(_run_task, tasks):
                yield result
                on_video()
    finally:
        _JOB = None
        cv2.setNumThreads(threads)


def generate_demo(settings: dict[str, Any], out: str | os.PathLike, *, workers: int = 1) -> dict[str, Any]:
    """Generate the demo dataset into the folder ``out`` (replaced atomically).

    Parameters
    ----------
    settings : dict
        Validated demo settings (``affpipe.config.section_settings("demo", ...)``).
    out : path
        Output folder.
    workers : int, keyword-only
        Videos rendered side by side (forked processes, one OpenCV thread each). Every video has its
        own seeds, so the files are byte-identical for any number of workers.

    Returns
    -------
    summary : dict
        The content of ``truth.json``.

    Raises
    ------
    ConfigError
        Bad identity names or partition assignment.
    DatasetError
        A source photo cannot be read or has no detectable face (the error names it).
    VideoError
        A video cannot be written, or does not decode to the expected number of frames.
    """
    from affpipe import __version__
    from affpipe.demo.preview import preview_sheet
    from affpipe.io.atomic import replace_dir, temp_sibling
    from affpipe.progress import progress

    out = Path(out)
    strengths = ExpressionStrengths.from_settings(settings["expression"])
    codec = CODECS[settings["codec"]]
    fps = float(settings["fps"])
    n_frames = int(settings["frames_per_video"])
    identities = load_identities(settings, strengths)

    tmp = temp_sibling(out, hidden=True)  # also removes the folder of a killed earlier run
    try:
        for sub in ("videos", "labels", "truth"):
            (tmp / sub).mkdir(parents=True)
        rows, videos = [], []
        tasks = [(i, k) for i, ident in enumerate(identities) for k in range(settings["videos_per_identity"])]
        job = _VideoJob(identities, settings, strengths, codec, tmp)
        total = len(tasks) * n_frames
        with progress(total=total, desc="demo", unit="frame") as bar:
            for row, video in _map_videos(job, tasks, workers=workers, on_video=lambda: bar.update(n_frames)):
                rows.append(row)
                videos.append(video)

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["video", "path", "partition", "labels", "subject"])
        w.writerows(rows)
        (tmp / "videos.csv").write_text(buf.getvalue())
        if settings["unlabelled_videos"]:
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["video", "path", "partition", "labels", "subject"])
            test = [r for r in rows if r[2] == "test"][: settings["unlabelled_videos"]]
            w.writerows([vid, path, part, "", subject] for vid, path, part, _, subject in test)
            (tmp / "unlabelled.csv").write_text(buf.getvalue())

        summary = {
            "generator": f"affpipe {__version__} demo",
            "seed": settings["seed"],
            "settings": settings,
            "fps": fps,
            "frame_size": [settings["frame_width"], settings["frame_height"]],
            "codec": {"name": settings["codec"], "fourcc": codec.fourcc, "container": codec.ext, "writer_backend": codec.backend},
            "labels": "valence and arousal in [-1, 1], one row per frame at time_s = frame / fps",
            "identities": {
                ident.name: {
                    "subject": ident.slug,
                    "partition": ident.partition,
                    "note": ident.face.source.note,
                    "source": ident.face.provenance,
                    "valence_range": [round(ident.valence_min, 6), 1.0],
                    "arousal_range": [-1.0, 1.0],
                }
                for ident in identities
            },
            "videos": videos,
        }
        (tmp / "truth.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        if settings["preview"]:
            (tmp / "preview.png").write_bytes(preview_sheet(identities, strengths))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
