"""AST-Net: stacked LSTM on clips sampled every Δt frames, with a Siamese twin one frame later.

Wang & Hsu, "AST-Net: An Attribute-based Siamese Temporal Network for Real-Time Emotion
Recognition" (BMVC 2017), §3.1, §3.3-3.4, §4.3. Registered as regressor ``astnet``; its
hyper-parameters are ``regression.astnet`` (the paper's values are the defaults).

Model
    Two stacked unidirectional LSTM layers (50 then 40 cells), many-to-many, and a linear layer
    from the last layer's 40 units to (valence, arousal) at every clip position (:class:`ASTNet`).
    The paper's input is the 4096-D fc6 feature of a VGG-16; here it is whatever the experiment's
    features store holds, standardised as for every regressor (``regression.feature_norm``).

Clips (§3.1, §3.4)
    A clip has N positions (``clip_len``, paper 50) at native frames ``t, t+Δt, ..., t+(N-1)Δt``
    (``clip_step`` Δt, paper 10: a clip spans ``(N-1)Δt + 1`` frames). Its Siamese twin is the same
    clip one native frame later, ``t+1, t+1+Δt, ...``. Both clips go through the *same* network
    (shared weights).

Frames without a feature (our decision; the paper's features exist on every frame)
    Features exist only on valid rows. A video's valid rows are first cut into segments at runs of
    missing frames longer than ``regression.max_gap_s`` (:func:`affpipe.regress.sequences.segments`,
    as for every sequence regressor): a clip never crosses such a gap. Inside a segment, a clip
    position whose native frame has no feature (a short, bridged gap, or a dynamic-image store with a
    row step above 1) takes the feature of the nearest valid row of the segment (ties: the earlier
    one) -- the recurrent state treats bridged gaps the same way as the BGRU does. The label of a
    position is always the label of its own native frame. A segment spanning fewer than
    ``(N-1)Δt + 2`` frames gives shorter clips (as many positions as fit, padded and masked); a
    segment too short for two positions is not trained on (the trend term needs two) but is still
    predicted.

Training clips
    Every start frame ``t`` of a segment, every ``clip_stride`` frames (default 1: every phase
    ``t mod Δt`` is trained on), for which the clip and its twin fit inside the segment. A clip
    without any labelled position is skipped. One epoch = every training clip once, in a seeded
    random order.

Loss (§3.4, Eq. 1-6), per clip of n positions, labels ``g`` and predictions ``y`` in R^2, ``||.||``
the Euclidean norm over (valence, arousal):

* label  ``(1/2n) Σ_i ||g_i - y_i||^2`` (Eq. 2 item 1 "Euclidean distance ... of all the frames"; we
  use the squared norm with the same ``1/2n`` normalisation as the trend term);
* trend  ``(1/2n) Σ_i ||(g_i - g_{i-1}) - (y_i - y_{i-1})||^2`` over adjacent clip positions, i.e.
  frames Δt apart (Eq. 3; the first position has no predecessor and contributes 0);
* local  ``(1/2M) Σ_k ||range_k(g) - range_k(y)||^2`` with ``range = max - min`` over the k-th of M
  consecutive, near-equal intervals of the clip (Eq. 4; M = ``intervals``, which the paper leaves
  open; position ``i`` of an n-position clip is in interval ``floor(i M / n)``; M is capped at n);
* global ``||range(g) - range(y)||^2`` over the whole clip (Eq. 5);
* Siamese ``(1/2n) Σ_i ||(g^B_i - g^A_i) - (y^B_i - y^A_i)||^2``: our reading of Eq. 6 (NOTES.md):
  the one-frame change of the prediction between the twin (B, one frame later) and the clip (A)
  matches the one-frame change of the label.

``total = mean over clips of [ (P(A) + P(B)) / 2 + λ · Siamese ]`` with the prediction loss
``P = label + w1 · trend + w2 · local + w3 · global`` applied to both branches (the twins are the same
network; the paper does not say whether P is applied to one or both). Paper weights: w1 = w2 = w3 =
10, λ = 1000. Unlabelled entries (NaN) and padding are masked out: differences need both ends
labelled, ranges are taken over the labelled positions of the interval (both for ``g`` and ``y``), and
a range with no labelled position contributes 0.

Prediction for every native frame (NOTES.md decisions)
    For each segment and each of the Δt phases ``p`` (start frame ``f0 + p``), the positions
    ``f0 + p + kΔt`` up to the segment's last frame and their twins (``+1``; beyond the segment's
    end, the nearest valid row) are cut into windows of N positions (hop ``predict_hop``, default
    N/2) and run through the network; the two branches' outputs are averaged position by position
    (the twin's output is attributed to the clip's frame: a half-frame offset, 10 ms at 50 fps),
    overlapping windows are averaged with the triangular weights of
    :func:`affpipe.regress.sequences.overlap_average`. Every native frame of the segment belongs to
    exactly one phase, so every valid row gets exactly one prediction.

Label warm-up (not in the paper, ``label_warmup_epochs``)
    The first epochs train the label term alone, then the full loss; only later epochs may be selected.
    The local and global terms compare ranges, which are blind to the sign of the prediction, and with
    the paper's weights they are tens of times the label term for labels in [-1, 1]: from a random start
    they can lock a dimension into a mirrored (negatively correlated) prediction. See docs/regression.md.

Attribute features
    The paper's input is the fc6 of a CNN fine-tuned on discrete expressions; here it is the features
    store the rule passes (``regression.astnet.attribute_input``, default the experiment's own input).

Optimisation (not stated in the paper): the generic settings (``regression.optimizer``, ``lr``,
``lr_decay``, ``momentum``, ``weight_decay``, ``grad_clip_norm``, ``batch_size`` clips per step,
``max_epochs``, ``patience``), devel selection, resumable checkpoints and seeding as for every
sequence regressor (:class:`affpipe.regress.train.SelectionLoop`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from affpipe.errors import AffpipeError
from affpipe.regress import sequences
from affpipe.regress import train as rtrain
from affpipe.regress.data import VideoData
from affpipe.regress.registry import OUTPUT_DIMENSIONS, RegressorSpec

log = logging.getLogger(__name__)

#: positions a training clip needs at least (the trend term compares adjacent positions)
MIN_TRAIN_POSITIONS = 2
#: a clip's twin is this many native frames later (§3.4)
TWIN_SHIFT = 1
#: columns of the training-clip table: video index, segment start row, segment stop row, start frame, positions
CLIP_COLUMNS = ("video", "seg_start", "seg_stop", "start_frame", "positions")
LOSS_TERMS = ("label", "trend", "local", "global", "siamese")


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------
class ASTNet(nn.Module):
    """Stacked unidirectional LSTM (many-to-many) with a linear per-position output (§3.3, §4.3).

    Parameters
    ----------
    input_dim : int
        Feature size D (paper: 4096, VGG-16 fc6).
    hidden_units : sequence of int
        Cells of each stacked LSTM layer, bottom first (paper: (50, 40)).
    dropout : float
        Dropout on the input features and between the layers (paper: none).
    outputs : int
        Output columns (2: valence, arousal).

    Notes
    -----
    ``forward(x, lengths)``: ``x`` (B, L, D) zero-padded at the end, ``lengths`` (B,) -> (B, L, outputs).
    The LSTM runs forward in time only, so a position's output never depends on padding after it.
    """

    def __init__(self, input_dim: int, *, hidden_units: Sequence[int], dropout: float = 0.0, outputs: int = 2):
        super().__init__()
        if not hidden_units:
            raise ValueError("ASTNet needs at least one LSTM layer")
        sizes = [input_dim, *map(int, hidden_units)]
        self.dropout = nn.Dropout(dropout)
        self.lstms = nn.ModuleList(nn.LSTM(a, b, batch_first=True) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = x
        for lstm in self.lstms:
            h, _ = lstm(self.dropout(h))
        return self.head(h)


def build_astnet(input_dim: int, settings: Mapping[str, Any]) -> nn.Module:
    hp = settings["astnet"]
    return ASTNet(input_dim, hidden_units=hp["hidden_units"], dropout=float(hp["dropout"]),
                  outputs=len(OUTPUT_DIMENSIONS))


# --------------------------------------------------------------------------------------------
# loss terms (pure; (B, n, 2) tensors, mask 1 = labelled real position)
# --------------------------------------------------------------------------------------------
def _clip_sizes(mask: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is None:
        return torch.full((mask.shape[0],), mask.shape[1], dtype=mask.dtype, device=mask.device)
    return lengths.to(mask.device, mask.dtype).clamp_min(1.0)


def label_loss(y: torch.Tensor, g: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Label term ``(1/2n) Σ_i ||g_i - y_i||^2`` per clip.

    Parameters
    ----------
    y, g : (B, n, 2) float
        Predictions and labels (labels of masked entries may hold anything finite).
    mask : (B, n, 2) float
        1 where the label is known and the position is real, else 0.
    lengths : (B,) int, optional
        Positions of each clip (default: n).

    Returns
    -------
    (B,) float
    """
    return ((g - y) ** 2 * mask).sum(dim=(1, 2)) / (2.0 * _clip_sizes(mask, lengths))


def trend_loss(y: torch.Tensor, g: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Trend term ``(1/2n) Σ_i ||(g_i - g_{i-1}) - (y_i - y_{i-1})||^2`` per clip (Eq. 3).

    Adjacent clip positions are Δt native frames apart. A difference counts only where both of its
    labels are known. Shapes as :func:`label_loss`; returns (B,).
    """
    dg = g[:, 1:] - g[:, :-1]
    dy = y[:, 1:] - y[:, :-1]
    m = mask[:, 1:] * mask[:, :-1]
    return ((dg - dy) ** 2 * m).sum(dim=(1, 2)) / (2.0 * _clip_sizes(mask, lengths))


def interval_index(n: int, length: int, intervals: int) -> np.ndarray:
    """Interval of each of ``n`` (padded) positions of a clip of ``length`` real positions.

    Position ``i < length`` is in interval ``floor(i * M / length)`` with ``M = min(intervals,
    length)`` (M consecutive intervals whose sizes differ by at most one); padding gets -1.

    Returns
    -------
    (n,) int64
    """
    m = min(int(intervals), int(length))
    idx = np.full(n, -1, dtype=np.int64)
    if length > 0:
        i = np.arange(length)
        idx[:length] = (i * m) // length
    return idx


def _masked_range(v: torch.Tensor, member: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """max - min of ``v`` (B, n, 1, d) over the positions where ``member`` (B, n, K, d) is true.

    Returns the range (B, K, d) (0 where empty) and whether it is defined (B, K, d).
    """
    big = torch.finfo(v.dtype).max
    hi = torch.where(member, v, torch.full_like(v, -big).expand_as(member)).amax(dim=1)
    lo = torch.where(member, v, torch.full_like(v, big).expand_as(member)).amin(dim=1)
    ok = member.any(dim=1)
    return torch.where(ok, hi - lo, torch.zeros_like(hi)), ok


def local_loss(
    y: torch.Tensor, g: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor | None = None, *, intervals: int
) -> torch.Tensor:
    """Local term ``(1/2M) Σ_k ||range_k(g) - range_k(y)||^2`` per clip (Eq. 4).

    ``range_k = max - min`` over the labelled positions of the k-th interval (:func:`interval_index`),
    per dimension; an interval without a labelled position in a dimension contributes 0 there.
    ``M = min(intervals, n)``. Shapes as :func:`label_loss`; returns (B,).
    """
    B, n, _ = y.shape
    sizes = [n] * B if lengths is None else [int(v) for v in lengths]
    M = int(intervals)
    idx = torch.from_numpy(np.stack([interval_index(n, s, M) for s in sizes])).to(y.device)  # (B, n)
    member = (idx[:, :, None] == torch.arange(M, device=y.device)[None, None, :])  # (B, n, M)
    member = member[..., None] & (mask[:, :, None, :] > 0)  # (B, n, M, 2)
    rg, ok = _masked_range(g[:, :, None, :], member)
    ry, _ = _masked_range(y[:, :, None, :], member)
    m_eff = torch.tensor([min(M, s) for s in sizes], dtype=y.dtype, device=y.device).clamp_min(1.0)
    return ((rg - ry) ** 2 * ok).sum(dim=(1, 2)) / (2.0 * m_eff)


def global_loss(y: torch.Tensor, g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Global term ``||range(g) - range(y)||^2`` per clip over its labelled positions (Eq. 5).

    Shapes as :func:`label_loss`; returns (B,).
    """
    member = (mask > 0)[:, :, None, :]  # (B, n, 1, 2)
    rg, ok = _masked_range(g[:, :, None, :], member)
    ry, _ = _masked_range(y[:, :, None, :], member)
    return ((rg - ry) ** 2 * ok).sum(dim=(1, 2))


def siamese_loss(
    y_a: torch.Tensor, y_b: torch.Tensor, g_a: torch.Tensor, g_b: torch.Tensor,
    mask_a: torch.Tensor, mask_b: torch.Tensor, lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Siamese term ``(1/2n) Σ_i ||(g^B_i - g^A_i) - (y^B_i - y^A_i)||^2`` per clip (Eq. 6, our reading).

    Branch B is the twin clip one native frame after branch A. A position counts where both labels
    are known. All inputs (B, n, 2); returns (B,).
    """
    m = mask_a * mask_b
    return (((g_b - g_a) - (y_b - y_a)) ** 2 * m).sum(dim=(1, 2)) / (2.0 * _clip_sizes(mask_a, lengths))


@dataclass(frozen=True)
class LossWeights:
    """``w1`` trend, ``w2`` local, ``w3`` global, ``lam`` Siamese, ``intervals`` = M (paper: 10, 10, 10, 1000, open)."""

    trend: float
    local: float
    global_: float
    siamese: float
    intervals: int

    @classmethod
    def from_settings(cls, hp: Mapping[str, Any]) -> "LossWeights":
        return cls(trend=float(hp["w_trend"]), local=float(hp["w_local"]), global_=float(hp["w_global"]),
                   siamese=float(hp["w_siamese"]), intervals=int(hp["intervals"]))

    def label_only(self) -> "LossWeights":
        """The same weights with the trend, local, global and Siamese terms switched off (the warm-up)."""
        return LossWeights(trend=0.0, local=0.0, global_=0.0, siamese=0.0, intervals=self.intervals)


def prediction_loss(y, g, mask, lengths, w: LossWeights) -> dict[str, torch.Tensor]:
    """The four prediction terms of one branch, per clip ((B,) each), and their weighted sum ``P`` (Eq. 2)."""
    t = {
        "label": label_loss(y, g, mask, lengths),
        "trend": trend_loss(y, g, mask, lengths),
        "local": local_loss(y, g, mask, lengths, intervals=w.intervals),
        "global": global_loss(y, g, mask),
    }
    t["P"] = t["label"] + w.trend * t["trend"] + w.local * t["local"] + w.global_ * t["global"]
    return t


def astnet_loss(y_a, y_b, g_a, g_b, mask_a, mask_b, lengths, w: LossWeights) -> dict[str, torch.Tensor]:
    """Eq. 1 averaged over the batch: ``mean[(P(A) + P(B))/2 + λ Siamese]``, with every term (scalars).

    Returns ``total`` and the batch means of ``label``, ``trend``, ``local``, ``global`` (averaged
    over the two branches, unweighted) and ``siamese``.
    """
    pa = prediction_loss(y_a, g_a, mask_a, lengths, w)
    pb = prediction_loss(y_b, g_b, mask_b, lengths, w)
    s = siamese_loss(y_a, y_b, g_a, g_b, mask_a, mask_b, lengths)
    out = {k: (0.5 * (pa[k] + pb[k])).mean() for k in ("label", "trend", "local", "global")}
    out["siamese"] = s.mean()
    out["total"] = (0.5 * (pa["P"] + pb["P"]) + w.siamese * s).mean()
    return out


# --------------------------------------------------------------------------------------------
# clips
# --------------------------------------------------------------------------------------------
def nearest_rows(frames: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of the valid row nearest to each queried native frame (ties: the earlier row).

    Parameters
    ----------
    frames : (k,) int, strictly increasing (k >= 1)
        Frames of the valid rows (e.g. of one segment).
    query : (q,) int
        Native frames.

    Returns
    -------
    (q,) int64 indices into ``frames`` (frames outside ``[frames[0], frames[-1]]`` get the end rows).
    """
    frames = np.asarray(frames, dtype=np.int64)
    query = np.asarray(query, dtype=np.int64)
    right = np.clip(np.searchsorted(frames, query, side="left"), 0, frames.size - 1)
    left = np.clip(right - 1, 0, frames.size - 1)
    take_left = np.abs(query - frames[left]) <= np.abs(frames[right] - query)
    return np.where(take_left, left, right).astype(np.int64)


def clip_positions(first: int, last: int, *, clip_len: int, clip_step: int) -> int:
    """Positions of the training clips of a segment spanning native frames ``first..last``.

    The clip (``t, t+Δt, ...``) and its twin (``+1``) must lie inside the segment:
    ``min(N, floor((last - 1 - first) / Δt) + 1)``, or 0 when the segment is a single frame.
    """
    if last - TWIN_SHIFT < first:
        return 0
    return int(min(clip_len, (last - TWIN_SHIFT - first) // clip_step + 1))


def clip_start_frames(first: int, last: int, *, clip_len: int, clip_step: int, stride: int) -> tuple[np.ndarray, int]:
    """Start frames of the training clips of one segment and their number of positions.

    Every ``stride`` frames from ``first`` while the clip of :func:`clip_positions` positions and its
    twin fit before ``last``.

    Returns
    -------
    starts : (c,) int64
    positions : int (0 = no clip)
    """
    k = clip_positions(first, last, clip_len=clip_len, clip_step=clip_step)
    if k == 0:
        return np.zeros(0, dtype=np.int64), 0
    last_start = last - TWIN_SHIFT - (k - 1) * clip_step
    return np.arange(first, last_start + 1, stride, dtype=np.int64), k


def video_segments(video: VideoData, settings: Mapping[str, Any]) -> np.ndarray:
    """(s, 2) ``[start, stop)`` valid-row segments of a video (cut at gaps longer than ``max_gap_s``)."""
    return sequences.segments(video.frames, max_gap=rtrain.max_gap_frames(video, settings))


def training_clips(videos: Sequence[VideoData], settings: Mapping[str, Any]) -> np.ndarray:
    """(m, 5) int64 rows :data:`CLIP_COLUMNS` of every training clip with at least one label.

    Clips with fewer than :data:`MIN_TRAIN_POSITIONS` positions are not trained on.
    """
    hp = settings["astnet"]
    n, dt, stride = int(hp["clip_len"]), int(hp["clip_step"]), int(hp["clip_stride"])
    out = []
    for vi, v in enumerate(videos):
        labelled = np.isfinite(v.labels.values).any(axis=1)
        for a, b in video_segments(v, settings):
            f0, f1 = int(v.frames[a]), int(v.frames[b - 1])
            starts, k = clip_start_frames(f0, f1, clip_len=n, clip_step=dt, stride=stride)
            if k < MIN_TRAIN_POSITIONS:
                continue
            offs = np.arange(k) * dt
            for t in starts:
                if labelled[t + offs].any() or labelled[t + TWIN_SHIFT + offs].any():
                    out.append((vi, a, b, int(t), k))
    return np.asarray(out, dtype=np.int64).reshape(-1, len(CLIP_COLUMNS))


def _rows_features(video: VideoData, scaler: rtrain.FeatureScaler, a: int, rows: np.ndarray) -> np.ndarray:
    """Standardised features (len(rows), D) of valid rows ``a + rows`` (rows relative to ``a``)."""
    lo, hi = int(rows.min()), int(rows.max()) + 1
    block = video.source.rows(a + lo, a + hi)
    return scaler.for_video(video).apply(block[rows - lo])


def collate_clips(
    videos: Sequence[VideoData], clips: np.ndarray, scaler: rtrain.FeatureScaler, *, clip_step: int
) -> dict[str, torch.Tensor]:
    """A zero-padded batch of clips and their twins.

    Parameters
    ----------
    clips : (B, 5) int rows of :func:`training_clips`.

    Returns
    -------
    dict
        ``x_a``, ``x_b`` (B, L, D) float32, ``g_a``, ``g_b`` (B, L, 2) float32 labels (0 where unknown),
        ``mask_a``, ``mask_b`` (B, L, 2) float32, ``lengths`` (B,) int64.
    """
    lengths = clips[:, 4].astype(np.int64)
    L = int(lengths.max())
    dim = videos[int(clips[0, 0])].source.dim
    out = {k: np.zeros((len(clips), L, dim), np.float32) for k in ("x_a", "x_b")}
    out.update({k: np.zeros((len(clips), L, 2), np.float32) for k in ("g_a", "g_b", "mask_a", "mask_b")})
    for j, (vi, a, b, t, k) in enumerate(clips):
        v = videos[int(vi)]
        seg_frames = v.frames[a:b]
        for branch, shift in (("a", 0), ("b", TWIN_SHIFT)):
            frames = int(t) + shift + np.arange(int(k)) * clip_step
            out[f"x_{branch}"][j, :k] = _rows_features(v, scaler, int(a), nearest_rows(seg_frames, frames))
            lab = v.labels.values[frames]
            ok = np.isfinite(lab)
            out[f"g_{branch}"][j, :k] = np.where(ok, lab, 0.0)
            out[f"mask_{branch}"][j, :k] = ok
    batch = {k: torch.from_numpy(v) for k, v in out.items()}
    batch["lengths"] = torch.from_numpy(lengths)
    return batch


# --------------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------------
def phase_positions(first: int, last: int, *, clip_step: int) -> list[np.ndarray]:
    """The native frames of each of the Δt phases of a segment spanning ``first..last``.

    Phase ``p`` holds ``first + p, first + p + Δt, ...`` up to ``last``; together the phases hold every
    frame of ``first..last`` exactly once. Phases starting after ``last`` are omitted.
    """
    return [np.arange(first + p, last + 1, clip_step, dtype=np.int64)
            for p in range(clip_step) if first + p <= last]


@torch.no_grad()
def predict_astnet(
    model: nn.Module, video: VideoData, scaler: rtrain.FeatureScaler, settings: Mapping[str, Any], *,
    device: torch.device,
) -> np.ndarray:
    """Predictions on every valid row of one video (every Δt phase run, the two branches averaged).

    Returns
    -------
    (k, 2) float64 per valid row of ``video``.
    """
    model.eval()
    k = len(video.source)
    if k == 0:
        return np.zeros((0, 2))
    hp = settings["astnet"]
    n, dt = int(hp["clip_len"]), int(hp["clip_step"])
    hop = int(hp["predict_hop"] or max(1, n // 2))
    bs = int(settings["batch_size"])
    amp = bool(settings["amp"])
    result = np.empty((k, 2))
    for a, b in video_segments(video, settings):
        seg_frames = video.frames[a:b]
        f0, f1 = int(seg_frames[0]), int(seg_frames[-1])
        per_frame = np.full((f1 - f0 + 1, 2), np.nan)
        jobs = []  # (phase frames, windows)
        for frames in phase_positions(f0, f1, clip_step=dt):
            jobs.append((frames, sequences.windows(frames.size, seq_len=n, hop=hop)))
        flat = [(ji, int(wa), int(wb)) for ji, (_, wins) in enumerate(jobs) for wa, wb in wins]
        outs: dict[int, list[np.ndarray]] = {ji: [] for ji in range(len(jobs))}
        for s in range(0, len(flat), bs):
            chunk = flat[s : s + bs]
            L = max(wb - wa for _, wa, wb in chunk)
            xs = {br: np.zeros((len(chunk), L, video.source.dim), np.float32) for br in ("a", "b")}
            for j, (ji, wa, wb) in enumerate(chunk):
                fr = jobs[ji][0][wa:wb]
                for br, shift in (("a", 0), ("b", TWIN_SHIFT)):
                    xs[br][j, : wb - wa] = _rows_features(video, scaler, int(a), nearest_rows(seg_frames, fr + shift))
            lengths = torch.tensor([wb - wa for _, wa, wb in chunk], dtype=torch.int64)
            with rtrain._autocast(device, amp):
                ya = model(torch.from_numpy(xs["a"]).to(device), lengths).float().cpu().numpy()
                yb = model(torch.from_numpy(xs["b"]).to(device), lengths).float().cpu().numpy()
            for j, (ji, wa, wb) in enumerate(chunk):
                outs[ji].append(0.5 * (ya[j, : wb - wa] + yb[j, : wb - wa]).astype(np.float64))
        for ji, (frames, wins) in enumerate(jobs):
            per_frame[frames - f0] = sequences.overlap_average(frames.size, wins, outs[ji])
        result[a:b] = per_frame[seg_frames - f0]
    if not np.all(np.isfinite(result)):
        raise AffpipeError("the AST-Net model predicted non-finite values", path=video.source.path)
    return result


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def fit_astnet(
    spec: RegressorSpec,
    train: Sequence[VideoData],
    devel: Sequence[VideoData],
    settings: Mapping[str, Any],
    *,
    checkpoint: Path,
    device: torch.device,
    fingerprint_files: Sequence[Path] = (),
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> rtrain.FitResult:
    """Train AST-Net on ``train`` with the Siamese loss, select the epoch on ``devel``.

    Same contract as :func:`affpipe.regress.train.fit_sequence_model` (devel selection, resumable
    checkpoint, seeded). One step = ``batch_size`` clips and their twins.
    """
    hp = settings["astnet"]
    weights = LossWeights.from_settings(hp)
    warmup = int(hp["label_warmup_epochs"])
    dt = int(hp["clip_step"])
    clips = training_clips(train, settings)
    if clips.shape[0] == 0:
        raise AffpipeError(
            "AST-Net has no training clip: no train segment spans two clip positions with a label "
            f"(regression.astnet.clip_step {dt})",
            hint="lower regression.astnet.clip_step or raise regression.max_gap_s",
        )
    run = rtrain.start_training(
        spec, train, devel, settings, checkpoint=checkpoint, device=device, fingerprint_files=fingerprint_files,
        units=f"{clips.shape[0]} clips of <= {int(hp['clip_len'])} positions every {dt} frames (+ twins)",
    )
    seed, model, optimizer, grad_scaler, use_amp, loop = (
        run.seed, run.model, run.optimizer, run.grad_scaler, run.use_amp, run.loop)
    bs = int(settings["batch_size"])
    clip = settings["grad_clip_norm"]
    if warmup >= loop.max_epochs:
        raise AffpipeError(
            f"regression.astnet.label_warmup_epochs ({warmup}) must be below max_epochs ({loop.max_epochs}): "
            "warm-up epochs train the label loss only and are never selected",
            hint="lower regression.astnet.label_warmup_epochs or raise regression.max_epochs",
        )

    def train_epoch(epoch: int) -> dict[str, float]:
        order = torch.randperm(clips.shape[0], generator=rtrain.epoch_generator(seed, epoch)).numpy()
        sums = dict.fromkeys(("total", *LOSS_TERMS), 0.0)
        batches = 0
        w = weights.label_only() if epoch < warmup else weights
        for s in range(0, len(order), bs):
            batch = collate_clips(train, clips[order[s : s + bs]], scaler=loop.scaler, clip_step=dt)
            t = {k: v.to(device) for k, v in batch.items()}
            for group in optimizer.param_groups:
                group["lr"] = rtrain._lr_at(loop.step, settings)
            optimizer.zero_grad(set_to_none=True)
            with rtrain._autocast(device, use_amp):
                y_a = model(t["x_a"], batch["lengths"]).float()
                y_b = model(t["x_b"], batch["lengths"]).float()
            terms = astnet_loss(y_a, y_b, t["g_a"], t["g_b"], t["mask_a"], t["mask_b"], t["lengths"], w)
            rtrain.check_finite_loss(terms["total"], epoch=epoch, checkpoint=checkpoint)
            grad_scaler.scale(terms["total"]).backward()
            if clip:
                grad_scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            grad_scaler.step(optimizer)
            grad_scaler.update()
            loop.step += 1
            batches += 1
            for key in sums:
                sums[key] += float(terms[key].item())
        rec = {f"train_{k}" if k != "total" else "train_loss": v / max(batches, 1) for k, v in sums.items()}
        rec["lr"] = rtrain._lr_at(loop.step, settings)
        rec["label_warmup"] = float(epoch < warmup)
        return rec

    def predict(v: VideoData) -> np.ndarray:
        return predict_astnet(model, v, loop.scaler, settings, device=device)

    return loop.run(train_epoch, predict, devel, n_windows=clips.shape[0], loss_key="train_loss",
                    on_epoch_end=on_epoch_end, first_selectable=warmup + 1)
