"""Sliding windows over a video's frames, and their dynamic images computed in one streaming pass.

Window geometry (DFM paper §3.2, §5.3; team decisions in docs/design):

* A window has ``T`` sampled frames spaced ``stride`` apart and **ends** at frame t (the frame its
  dynamic image belongs to): frames ``t - (T-1)*stride, ..., t - stride, t``. It covers
  ``span = (T-1)*stride + 1`` video frames.
* Window ends are ``first + span - 1 + k*hop`` for k = 0, 1, ... (``first`` = the first frame of
  the video): one dynamic image every ``hop`` frames from the first full window on. The
  ``span - 1`` frames before the first full window have none.
* A window with an invalid frame (no face, or a frame missing from the static file) yields no
  dynamic image. ``require_valid="sampled"`` (default) checks the T frames the window actually
  uses; ``"span"`` checks every frame it covers. Skipped windows are kept as rows with
  ``valid=False``, never filled in.

:class:`SlidingDynamicImages` computes the dynamic images of every window of one or more image
streams (SFA and SFS) in a single pass over the frames, with memory bounded by one block of
windows (never the whole video):

* it keeps the frames' *consecutive differences* ``Δ_f = I_f - I_{f-stride}`` (float32, exact
  integers for uint8 frames) and, for the exact solver, the dot products
  ``<Δ_f, Δ_{f-j*stride}>`` (j < T-1). With hop 1 each window adds one frame, so only T-1 new dot
  products per window are computed; every other entry of the window's Gram matrix is reused from
  earlier windows;
* the RankSVM QPs of a block of windows (all streams) are solved together
  (:func:`affpipe.dynamic.rankpool.solve_ranksvm`), and each dynamic image is one weighted sum of the
  window's T-1 differences;
* memory traffic, not arithmetic, bounds both the dot products and the weighted sums (each touches
  T-1 rows of 4*H*W*C bytes), so both are done as matrix products over :data:`GROUP` consecutive
  rows/windows of one chain of frames (frames ``≡ r mod stride``), reading each row once per group;
* stable pixels (for the masks, tolerance 0) come from a per-pixel run length of "equal to the
  previous sampled frame", updated once per frame (:func:`affpipe.dynamic.masks.update_stable_run`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import numpy as np

from affpipe.dynamic import masks as masks_mod
from affpipe.dynamic import rankpool

#: Windows whose QPs are solved in one batch (bounds memory: the block's Δ rows are buffered).
BLOCK_WINDOWS = 64
#: Consecutive differences (or windows) of one chain handled by one matrix product. Reading the
#: float32 differences from memory, not arithmetic, bounds a per-window matrix-vector product
#: (T-1 rows of 4*H*W*C bytes); a product over GROUP windows reads their GROUP+T-2 rows once.
GROUP = 16
SOLVERS = ("exact", "approx")
REQUIRE_VALID = ("sampled", "span")


@dataclass(frozen=True)
class WindowSpec:
    """Geometry of the sliding windows.

    Parameters
    ----------
    length : int
        T, sampled frames per window (>= 2).
    stride : int
        Spacing of the sampled frames inside a window (>= 1).
    hop : int
        One window every ``hop`` frames (>= 1).
    """

    length: int
    stride: int = 1
    hop: int = 1

    def __post_init__(self) -> None:
        if self.length < 2:
            raise ValueError(f"window length T must be >= 2, got {self.length}")
        if self.stride < 1 or self.hop < 1:
            raise ValueError(f"stride and hop must be >= 1, got {self.stride}, {self.hop}")

    @property
    def span(self) -> int:
        """Video frames covered by one window: (T-1)*stride + 1."""
        return (self.length - 1) * self.stride + 1

    @property
    def offsets(self) -> np.ndarray:
        """(T,) int64 offsets of the sampled frames from the window's end, oldest first (last is 0)."""
        return np.arange(-(self.length - 1) * self.stride, 1, self.stride, dtype=np.int64)

    def ends(self, first_frame: int, last_frame: int) -> np.ndarray:
        """(n,) int64 end frames of all full windows in ``[first_frame, last_frame]``."""
        start = first_frame + self.span - 1
        if last_frame < start:
            return np.zeros(0, dtype=np.int64)
        return np.arange(start, last_frame + 1, self.hop, dtype=np.int64)

    def frames(self, end: int) -> np.ndarray:
        """(T,) int64 sampled frames of the window ending at ``end``."""
        return end + self.offsets


def dense_validity(frames: np.ndarray, valid: np.ndarray) -> tuple[int, np.ndarray]:
    """Per-video-frame validity from a static file's ``frame``/``valid`` rows.

    Frames with no row (gaps) are invalid.

    Parameters
    ----------
    frames : (n,) int
        Strictly increasing video frame indices.
    valid : (n,) bool

    Returns
    -------
    first : int
        First frame (``frames[0]``; 0 for an empty file).
    ok : (last - first + 1,) bool
        ``ok[f - first]`` for every frame from the first to the last row.
    """
    frames = np.asarray(frames, dtype=np.int64)
    valid = np.asarray(valid, dtype=bool)
    if frames.size == 0:
        return 0, np.zeros(0, dtype=bool)
    if np.any(np.diff(frames) <= 0):
        raise ValueError("frame indices must be strictly increasing")
    first = int(frames[0])
    ok = np.zeros(int(frames[-1]) - first + 1, dtype=bool)
    ok[frames - first] = valid
    return first, ok


def window_validity(ok: np.ndarray, first: int, ends: np.ndarray, spec: WindowSpec, *, require: str = "sampled") -> np.ndarray:
    """Which windows have all their frames valid.

    Parameters
    ----------
    ok : (N,) bool
        Dense per-frame validity from ``first`` on (:func:`dense_validity`).
    first : int
        Frame of ``ok[0]``.
    ends : (n,) int
        Window end frames.
    spec : WindowSpec
    require : {"sampled", "span"}, keyword-only
        Check the T sampled frames, or every frame of the span.

    Returns
    -------
    (n,) bool
    """
    if require not in REQUIRE_VALID:
        raise ValueError(f"require must be one of {REQUIRE_VALID}, got {require!r}")
    ends = np.asarray(ends, dtype=np.int64)
    if ends.size == 0:
        return np.zeros(0, dtype=bool)
    if require == "sampled":
        idx = ends[:, None] + spec.offsets[None, :] - first
        inside = (idx >= 0) & (idx < ok.size)
        return (inside & ok[np.clip(idx, 0, max(ok.size - 1, 0))]).all(axis=1)
    # span: count invalid frames in [end - span + 1, end] with a cumulative sum
    bad = np.concatenate([[0], np.cumsum(~ok)])
    lo = ends - spec.span + 1 - first
    hi = ends - first + 1
    inside = (lo >= 0) & (hi <= ok.size)
    lo_c = np.clip(lo, 0, ok.size)
    hi_c = np.clip(hi, 0, ok.size)
    return inside & (bad[hi_c] - bad[lo_c] == 0)


@dataclass
class WindowBlock:
    """Results for a block of consecutive windows.

    Attributes
    ----------
    ends : (k,) int64
        Window end frames (the frame each dynamic image belongs to).
    valid : (k,) bool
        False where the window had an invalid frame: its images are zeros, masks False, stats NaN.
    images : dict of str -> (k, H, W, C) float32
        Dynamic image per stream (e.g. ``"sfa"`` -> DFA), in the solver's pixel scale.
    dynamic : dict of str -> (k, H, W) bool
        Dynamic (non-stable) pixels per stream; only when masks were requested.
    stats : dict of str -> dict of str -> (k,) float64
        Per stream, exact solver only (the approximate one computes no Gram matrix): ``kkt_residual``,
        ``duality_gap``, ``ranked_share``, ``at_bound_share``, ``iterations``; NaN for invalid windows.
    """

    ends: np.ndarray
    valid: np.ndarray
    images: dict[str, np.ndarray] = field(default_factory=dict)
    dynamic: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


class SlidingDynamicImages:
    """Dynamic images of every window of one or more synchronised uint8 image streams.

    Push the frames in order with :meth:`push` (every frame index from ``first_frame`` on; gaps are
    treated as invalid frames), then call :meth:`finish`; both yield :class:`WindowBlock` results in
    window order. Only windows whose end lies in ``[first_end, last_end]`` are produced, so a video
    can be split into contiguous ranges of windows processed independently (each range must be
    pushed from ``range_start_frame(first_end)`` on).

    Parameters
    ----------
    spec : WindowSpec
    shapes : mapping of str -> (H, W, C)
        The streams (e.g. ``{"sfa": (S, S, 3), "sfs": (S, S, 3)}``).
    solver : {"exact", "approx"}
        Exact RankSVM (Eq. 3) or approximate rank pooling (Bilen et al.).
    lam : float
        λ of Eq. 3 (exact solver).
    pixel_scale : float
        Factor from uint8 values to the scale the problem is solved in (e.g. 1/255).
    want_dynamic : bool
        Also produce the dynamic-pixel maps of each stream (for the masks).
    mask_tolerance : int
        Sum-of-differences tolerance of the stable-pixel test (0 = exact; uses the run-length path).
    require : {"sampled", "span"}
        Which frames of a window must be valid.
    first_frame : int
        Video frame origin of the window grid (the first frame of the video / static file).
    first_end, last_end : int, optional
        Range of window ends to produce (default: all).
    block : int
        Windows per QP batch.
    """

    def __init__(
        self,
        spec: WindowSpec,
        shapes: Mapping[str, Sequence[int]],
        *,
        solver: str = "exact",
        lam: float = 1.0,
        pixel_scale: float = 1.0 / 255.0,
        want_dynamic: bool = False,
        mask_tolerance: int = 0,
        require: str = "sampled",
        first_frame: int = 0,
        first_end: int | None = None,
        last_end: int | None = None,
        block: int = BLOCK_WINDOWS,
    ):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if require not in REQUIRE_VALID:
            raise ValueError(f"require must be one of {REQUIRE_VALID}, got {require!r}")
        if not lam > 0:
            raise ValueError(f"lambda must be > 0, got {lam}")
        self.spec = spec
        self.solver = solver
        self.lam = float(lam)
        self.pixel_scale = float(pixel_scale)
        self.want_dynamic = bool(want_dynamic)
        self.mask_tolerance = int(mask_tolerance)
        self.require = require
        self.first_frame = int(first_frame)
        grid0 = self.first_frame + spec.span - 1
        self.first_end = grid0 if first_end is None else max(int(first_end), grid0)
        # snap to the grid
        self.first_end = grid0 + -(-(self.first_end - grid0) // spec.hop) * spec.hop
        self.last_end = last_end
        self.block = max(1, int(block))
        self.shapes = {name: tuple(int(v) for v in shape) for name, shape in shapes.items()}
        self.names = list(self.shapes)
        t, s = spec.length, spec.stride
        # rows kept: a block of windows plus everything one window and one difference look back
        self.capacity = spec.span + self.block * spec.hop + s
        cap = self.capacity
        self._frames = {n: np.zeros((cap, *shp), dtype=np.uint8) for n, shp in self.shapes.items()}
        self._delta = {n: np.zeros((cap, int(np.prod(shp))), dtype=np.float32) for n, shp in self.shapes.items()}
        self._band = {n: np.zeros((cap, t - 1), dtype=np.float64) for n in self.shapes}
        self._run = (
            {n: np.zeros((cap, *shp[:2]), dtype=np.uint16) for n, shp in self.shapes.items()}
            if self.want_dynamic and self.mask_tolerance == 0
            else None
        )
        self._ok = np.zeros(cap, dtype=bool)
        self._base = self.range_start_frame(self.first_end)  # frame of row 0
        # per chain (frame residue mod stride): last frame whose Δ dot products are in the band
        self._gram_done = [self._base - 1] * s
        self._n = 0  # rows filled
        self._pending: list[tuple[int, bool]] = []  # (end frame, valid)
        # window Gram assembly: H[j, l] = band[row_end - (T-2-max(j,l))*s, |j-l|]
        j = np.arange(t - 1)
        jl = np.maximum(j[:, None], j[None, :])
        self._h_rows = -(t - 2 - jl) * s
        self._h_lags = np.abs(j[:, None] - j[None, :])
        self._approx_coef = rankpool.frame_to_delta_coefficients(rankpool.approx_coefficients(t))
        self.windows_done = 0

    # ----------------------------------------------------------------------------------------
    def range_start_frame(self, first_end: int) -> int:
        """First frame that must be pushed to produce the window ending at ``first_end``: its first
        sampled frame (the window's differences and run lengths start there)."""
        return max(self.first_frame, int(first_end) - self.spec.span + 1)

    def _is_end(self, frame: int) -> bool:
        if frame < self.first_end or (self.last_end is not None and frame > self.last_end):
            return False
        return (frame - self.first_end) % self.spec.hop == 0

    def _needed(self, frame: int) -> bool:
        """Does ``frame`` appear as a sampled frame of a window that will be produced?"""
        s = self.spec.stride
        for k in range(self.spec.length):
            if self._is_end(frame + k * s):
                return True
        return False

    # ----------------------------------------------------------------------------------------
    def push(self, frame: int, valid: bool, images: Mapping[str, np.ndarray] | None) -> Iterator[WindowBlock]:
        """Add the next frame.

        Parameters
        ----------
        frame : int
            Video frame index; must follow the previous one (gaps are pushed as invalid frames).
        valid : bool
            False when the frame has no face; ``images`` is then ignored.
        images : mapping of str -> (H, W, C) uint8
            One image per stream.

        Yields
        ------
        WindowBlock
            When a block of windows is complete.
        """
        if valid:
            for name in self.names:
                img = np.asarray(images[name]) if images is not None and name in images else None
                if img is None or img.shape != self.shapes[name] or img.dtype != np.uint8:
                    got = "nothing" if img is None else f"{img.shape} {img.dtype}"
                    raise ValueError(f"stream {name!r}: frame {frame} has {got}, expected {self.shapes[name]} uint8")
        expected = self._base + self._n
        if frame < expected:
            raise ValueError(f"frames must be pushed in order: got {frame}, expected {expected}")
        while expected < frame:  # a gap: frames without a row are invalid
            yield from self._push_one(expected, False, None)
            expected += 1
        yield from self._push_one(frame, valid, images)

    def finish(self) -> Iterator[WindowBlock]:
        """Flush the remaining windows."""
        if self._pending:
            yield self._flush()

    def _push_one(self, frame: int, valid: bool, images: Mapping[str, np.ndarray] | None) -> Iterator[WindowBlock]:
        if self.last_end is not None and frame > self.last_end:
            return
        if self._n == self.capacity:
            if self._pending:
                yield self._flush()
            self._shift(frame)
        row = self._n
        self._n += 1
        s = self.spec.stride
        self._ok[row] = bool(valid)
        prev = row - s
        prev_ok = prev >= 0 and self._ok[prev]
        if valid and self._needed(frame):
            for name in self.names:
                img = images[name]
                self._frames[name][row] = img
                if prev_ok:
                    d = self._delta[name][row]
                    np.subtract(img.reshape(-1), self._frames[name][prev].reshape(-1), out=d, dtype=np.float32)
                if self._run is not None:
                    prev_run = self._run[name][prev] if prev_ok else None
                    before = self._frames[name][prev] if prev_ok else None
                    self._run[name][row] = masks_mod.update_stable_run(prev_run, img, before)
        if self._is_end(frame):
            self._pending.append((frame, self._window_ok(row)))
            if len(self._pending) >= self.block:
                yield self._flush()

    def _window_ok(self, row: int) -> bool:
        span = self.spec.span
        if row - span + 1 < 0:
            return False
        if self.require == "span":
            return bool(self._ok[row - span + 1 : row + 1].all())
        return bool(self._ok[row - span + 1 : row + 1 : self.spec.stride].all())

    def _shift(self, frame: int) -> None:
        """Drop rows no future window needs (called with no windows pending)."""
        self._update_gram()  # the kept rows' dot products may involve rows about to be dropped
        s = self.spec.stride
        keep_from = min(frame - self.spec.span + 1, frame - s)  # frame is the next to be pushed
        drop = max(0, keep_from - self._base)
        if drop == 0:
            raise RuntimeError("window buffer too small")  # capacity guarantees this never happens
        kept = self._n - drop
        for arrays in (self._frames, self._delta, self._band) + ((self._run,) if self._run is not None else ()):
            for a in arrays.values():
                a[:kept] = a[drop : self._n]
        self._ok[:kept] = self._ok[drop : self._n]
        self._base += drop
        self._n = kept

    # ----------------------------------------------------------------------------------------
    def _chain(self, residue: int) -> tuple[int, int]:
        """First buffer row and number of rows of the chain of frames ``≡ residue (mod stride)``."""
        s = self.spec.stride
        r0 = (residue - self._base) % s
        return r0, max(0, -(-(self._n - r0) // s))

    def _update_gram(self) -> None:
        """Band of Δ dot products ``<Δ_f, Δ_{f - j*stride}>`` (j < T-1) for every new row, by chain.

        One matrix product per GROUP new rows of a chain, against those rows and the T-2 before
        them, instead of one matrix-vector product per row: each row is read from memory once.
        """
        if self.solver != "exact" or self._n == 0:
            return
        t, s = self.spec.length, self.spec.stride
        last = self._base + self._n - 1
        lags = np.arange(t - 1)
        for residue in range(s):
            r0, n_chain = self._chain(residue)
            if n_chain == 0:
                continue
            done = self._gram_done[residue]
            first_new = max(0, (done + 1 - (self._base + r0) + s - 1) // s)  # chain index
            if first_new < n_chain:
                for name in self.names:
                    view = self._delta[name][r0 : r0 + (n_chain - 1) * s + 1 : s]  # (n_chain, D)
                    band = self._band[name]
                    for a in range(first_new, n_chain, GROUP):
                        b = min(a + GROUP, n_chain)
                        lo = max(0, a - (t - 2))
                        g = view[a:b] @ view[lo:b].T  # (b-a, b-lo)
                        idx = np.arange(a, b)[:, None]
                        col = idx - lags[None, :] - lo
                        ok = col >= 0
                        rows = np.broadcast_to(r0 + idx * s, col.shape)
                        band[rows[ok], np.broadcast_to(lags, col.shape)[ok]] = g[(idx - a + 0 * col)[ok], col[ok]]
            self._gram_done[residue] = max(done, last - ((last - residue) % s))

    def _weighted_sums(self, name: str, rows: np.ndarray, coef: np.ndarray, out: np.ndarray, out_rows: np.ndarray) -> None:
        """``out[out_rows[i]] = Σ_j coef[i, j] Δ_j`` over the window ending at buffer row ``rows[i]``.

        Windows of the same chain are grouped so that one matrix product (a banded coefficient
        matrix times the group's GROUP+T-2 difference rows) serves up to GROUP windows.

        Parameters
        ----------
        rows : (k,) int
            End rows of the windows.
        coef : (k, T-1) float
            Coefficients of the windows' differences, oldest first, already in the output scale.
        out : (K, D) float32
        out_rows : (k,) int
            Row of ``out`` receiving each window's image.
        """
        t, s = self.spec.length, self.spec.stride
        delta = self._delta[name]
        for residue in range(s):
            r0, n_chain = self._chain(residue)
            sel = np.flatnonzero((rows - r0) % s == 0)
            if sel.size == 0:
                continue
            cidx = (rows[sel] - r0) // s  # chain index of each window's last difference
            view = delta[r0 : r0 + (n_chain - 1) * s + 1 : s]
            start = 0
            while start < sel.size:
                stop = start + 1
                while stop < sel.size and cidx[stop] - cidx[start] < GROUP:
                    stop += 1
                lo = cidx[start] - (t - 2)
                hi = cidx[stop - 1] + 1
                w = np.zeros((stop - start, hi - lo), dtype=np.float32)
                for i in range(start, stop):
                    c = cidx[i] - (t - 2) - lo
                    w[i - start, c : c + t - 1] = coef[sel[i]]
                out[out_rows[sel[start:stop]]] = w @ view[lo:hi]
                start = stop

    def _flush(self) -> WindowBlock:
        ends = np.array([e for e, _ in self._pending], dtype=np.int64)
        valid = np.array([v for _, v in self._pending], dtype=bool)
        self._pending = []
        k = len(ends)
        t, s = self.spec.length, self.spec.stride
        rows = ends - self._base
        good = np.flatnonzero(valid)
        out = WindowBlock(ends=ends, valid=valid)
        coefs: dict[str, np.ndarray] = {}
        if self.solver == "exact" and good.size:
            self._update_gram()
            grams = []
            for name in self.names:
                band = self._band[name]
                h = band[rows[good, None, None] + self._h_rows[None], self._h_lags[None]]
                grams.append(h * self.pixel_scale**2)
            sol = rankpool.solve_ranksvm(np.concatenate(grams), lam=self.lam)
            for i, name in enumerate(self.names):
                sl = slice(i * good.size, (i + 1) * good.size)
                coefs[name] = sol.delta_coef[sl]
                out.stats[name] = {
                    "kkt_residual": _scatter(k, good, sol.kkt_residual[sl]),
                    "duality_gap": _scatter(k, good, sol.duality_gap[sl]),
                    "ranked_share": _scatter(k, good, sol.ranked_share[sl]),
                    "at_bound_share": _scatter(k, good, sol.at_bound_share[sl]),
                    "iterations": _scatter(k, good, sol.iterations[sl].astype(np.float64)),
                }
        elif good.size:
            for name in self.names:
                coefs[name] = np.broadcast_to(self._approx_coef, (good.size, t - 1))
        for name in self.names:
            shape = self.shapes[name]
            imgs = np.empty((k, *shape), dtype=np.float32)
            imgs[~valid] = 0.0
            if good.size:
                scaled = (coefs[name] * self.pixel_scale).astype(np.float32)
                self._weighted_sums(name, rows[good], scaled, imgs.reshape(k, -1), good)
            out.images[name] = imgs
            if self.want_dynamic:
                dyn = np.zeros((k, *shape[:2]), dtype=bool)
                for w in good:
                    r = rows[w]
                    if self._run is not None:
                        dyn[w] = masks_mod.dynamic_from_run(self._run[name][r], t)
                    else:
                        window = self._frames[name][r - (t - 1) * s : r + 1 : s]
                        dyn[w] = masks_mod.dynamic_pixels(window, tolerance=self.mask_tolerance)
                out.dynamic[name] = dyn
        self.windows_done += k
        return out


def _scatter(k: int, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full(k, np.nan)
    out[idx] = values
    return out
