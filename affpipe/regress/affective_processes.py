"""Affective Processes (AP): a Neural Process over a frozen per-frame backbone's features and predictions.

Sanchez, Tellamekala, Valstar & Tzimiropoulos, "Affective Processes: stochastic modelling of
temporal context for emotion and facial expression recognition" (CVPR 2021), §3.1-3.2, §4.2.
Registered as regressor ``ap``; hyper-parameters in ``regression.ap`` (the paper's values are the
defaults).

Inputs
    Per valid row, the features store's ``features`` (standardised by ``regression.feature_norm``)
    as x_t and its ``pred`` (n, 2) -- the per-frame CNN's own (valence, arousal), the paper's frozen
    backbone predictions -- as the pseudo-labels ŷ_t. The CNN is never fine-tuned here.

Model (Fig. 2, §3.2.3; :class:`AffectiveProcess`)
    * encoder q_φ: ŷ_c is "upsampled" by a linear layer to the feature size D, concatenated with x_c
      and mapped by a three-layer MLP (ReLU) to r_c (``r_dim``, paper 128);
    * aggregation: r_C = mean of r_c over the context points;
    * latent encoder: a common linear layer (ReLU), then two linear layers to μ_C and σ_C of the
      global latent z (``z_dim``); σ = ``latent_sigma_min + (1 - latent_sigma_min) · sigmoid(.)``
      (the usual NP parameterisation, Le et al. 2018; the paper does not state it);
    * decoder f_θ: a three-layer MLP on (x_t, z): two hidden ReLU layers, then two linear heads,
      the mean ỹ^μ_t and the std ỹ^σ_t = ``output_sigma_min + softplus(.)`` of a Gaussian per
      output dimension.

Loss (Eq. 1), per training window with target set T (all its rows) and context C ⊂ T:

* NLL ``-(1/|T|) Σ_{t∈T} Σ_d log N(y_td; ỹ^μ_td, ỹ^σ_td)`` with one z ~ q(z|C) (reparameterised);
  the targets' labels are the ground truth; unlabelled entries are masked out and |T| counts the
  labelled target rows (:func:`gaussian_nll`);
* KL ``D_KL(q(z|T) || q(z|C)) / |T|`` between the diagonal Gaussians of the latent encoder on the
  target set (x_t with its ground-truth labels) and on the context (:func:`kl_diag_gaussians`);
  divided by |T| so the objective is the NP evidence lower bound per target point (as in the
  reference NP implementations);
* output regulariser ``D_KL(N(S(ỹ^μ), S(ỹ^σ)) || N(0, 1))`` per output dimension, summed over the
  dimensions (:func:`output_regulariser`), S aggregating over the window's rows. The paper prints S
  as a sum Σ_t (``reg_reduce: sum``). Taken literally, that KL contains ``(Σ_t ỹ^μ_t)² / 2``: any
  window whose predictions do not sum to about 0 is penalised quadratically in its length (a
  70-frame window at a valence of 0.3 costs ~220 against a per-frame NLL of order 1), so no model
  could follow a non-zero affect level -- yet the paper reports its best ablation for NLL + reg.
  Our default reading (``reg_reduce: mean``) is the window's average predictive distribution: S =
  the mean over the window's rows, pulled towards the labels' prior N(0, 1).

``L = NLL + λ_kl · KL + λ_reg · reg`` (paper: λ_kl = λ_reg = 1), averaged over the windows of a batch.

Training (§4.2)
    Each step draws ``batch_size`` (paper 16) windows: a train video uniformly, then a window of
    ``min_window..max_window`` (paper 35-70) consecutive valid rows inside one of its segments (cut
    at gaps longer than ``regression.max_gap_s``; a shorter segment is taken whole); then
    ``3..L`` context rows uniformly without replacement (L = the window's rows). The context's labels
    are, with probability ``gt_context_prob`` (paper 0.5) per window, the ground truth (context drawn
    from the rows labelled in both dimensions), otherwise the backbone predictions. A window with
    fewer than ``min_context`` labelled rows is redrawn. Adam (lr 2.5e-4, weight decay 1e-4, betas
    0.9/0.999), cosine annealing of the learning rate from ``lr`` to 0 over ``epochs`` x
    ``iterations_per_epoch`` steps (paper 25 x 1000). Sampling is seeded from ``(seed, epoch)``.

Inference (§3.2.2, §4.2)
    Each segment's rows are cut into windows of ``test_window`` rows (paper 70; the last window of a
    segment is aligned to its end and overlapping outputs are averaged). In each window the context
    is the ``test_context`` rows (paper 40; all rows of a shorter window) with the lowest uncertainty
    ``||σ_C(r_c)||_2``: the latent encoder's σ computed from each row's own r_c alone, r_c being
    encoded from the row's features and the **backbone prediction** ŷ_c (labels are never used at
    inference: devel selection and test prediction see only features and backbone predictions;
    ties: the earlier row). Then r_C = mean over the selected rows, z = μ_C and the prediction is the
    decoder mean ỹ^μ_t for every row of the window.

Variants (``regression.ap.variant``, the paper's ablation §5, Table 1; :data:`VARIANTS`)
    ``ap`` (default) the model above; ``ap_det`` "AP + Det." adds a deterministic path (own encoder,
    r^det_C given to the decoder next to z); ``deterministic`` "Deterministic AP" has no latent: the
    decoder gets r_C, no KL term, no sampling, and every row of a test window is context.

Not reproduced: the paper's backbone is trained multi-task (CCC + MSE on valence/arousal, cross-entropy
on emotion classes and on valence/arousal bins); here the backbone is the per-frame CNN (MSE only).

Selection, checkpoints, seeding: :class:`affpipe.regress.train.SelectionLoop` (devel CCC after every
epoch, ``patience``, resumable). Not used by ``ap``: ``seq_len``, ``train_hop``, ``predict_hop``,
``batch_size``, ``max_epochs``, ``optimizer``, ``lr``, ``lr_decay``, ``momentum``, ``weight_decay``
of the ``regression`` section (``ap`` has its own).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from affpipe.errors import AffpipeError
from affpipe.regress import data as rdata
from affpipe.regress import sequences
from affpipe.regress import train as rtrain
from affpipe.regress.data import VideoData
from affpipe.regress.registry import OUTPUT_DIMENSIONS, RegressorSpec

log = logging.getLogger(__name__)

LOG_2PI = math.log(2.0 * math.pi)
#: Model variants of the paper's ablation (§5, Table 1): ``ap`` the model of Fig. 2 (latent path
#: only); ``ap_det`` "AP + Det." (latent and a separate deterministic path); ``deterministic``
#: "Deterministic AP" (a single deterministic path, no latent variable, no sampling).
VARIANTS = ("ap", "ap_det", "deterministic")
REG_REDUCTIONS = ("sum", "mean")
#: attempts to draw a window with enough labelled rows before giving up (per window)
MAX_DRAWS = 1000


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------
def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class AffectiveProcess(nn.Module):
    """Neural Process with a global latent over (features, pseudo-label) pairs (Fig. 2).

    Parameters
    ----------
    input_dim : int
        Feature size D (paper: 512).
    hidden : int
        Width of the hidden layers of the encoder and decoder MLPs.
    r_dim, z_dim : int
        Size of r_c and of the latent z (paper: 128).
    latent_sigma_min, output_sigma_min : float
        Lower bounds of the latent and output standard deviations.
    outputs : int
        Output dimensions (2).
    variant : {"ap", "ap_det", "deterministic"}
        See :data:`VARIANTS`. ``ap_det`` adds a deterministic path (its own ŷ upsampling and
        three-layer encoder MLP, mean-aggregated to r^det_C) whose r^det_C is given to the decoder
        next to z; ``deterministic`` drops the latent encoder: the decoder gets r_C itself.
    """

    def __init__(self, input_dim: int, *, hidden: int, r_dim: int, z_dim: int, latent_sigma_min: float,
                 output_sigma_min: float, outputs: int = 2, variant: str = "ap"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        self.upsample = nn.Linear(outputs, input_dim)
        self.encoder = _mlp([2 * input_dim, hidden, hidden, r_dim])
        code_dim = r_dim
        if variant != "deterministic":
            self.latent_common = nn.Linear(r_dim, r_dim)
            self.latent_mu = nn.Linear(r_dim, z_dim)
            self.latent_sigma = nn.Linear(r_dim, z_dim)
            code_dim = z_dim
        if variant == "ap_det":
            self.det_upsample = nn.Linear(outputs, input_dim)
            self.det_encoder = _mlp([2 * input_dim, hidden, hidden, r_dim])
            code_dim = z_dim + r_dim
        self.decoder = _mlp([input_dim + code_dim, hidden, hidden])
        self.head_mu = nn.Linear(hidden, outputs)
        self.head_sigma = nn.Linear(hidden, outputs)
        self.latent_sigma_min = float(latent_sigma_min)
        self.output_sigma_min = float(output_sigma_min)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """r_c for every row: x (..., D), y (..., 2) -> (..., r_dim)."""
        return self.encoder(torch.cat([x, self.upsample(y)], dim=-1))

    @property
    def has_latent(self) -> bool:
        """False for the deterministic variant (no z, no KL term, no sampling)."""
        return self.variant != "deterministic"

    def encode_det(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Deterministic-path r^det_c (``ap_det`` only): x (..., D), y (..., 2) -> (..., r_dim)."""
        return self.det_encoder(torch.cat([x, self.det_upsample(y)], dim=-1))

    def code(self, r_c: torch.Tensor, z: torch.Tensor | None, det_c: torch.Tensor | None) -> torch.Tensor:
        """The decoder's context input (B, code_dim): z (``ap``), [z, r^det_C] (``ap_det``) or r_C (``deterministic``)."""
        if self.variant == "deterministic":
            return r_c
        if self.variant == "ap_det":
            return torch.cat([z, det_c], dim=-1)
        return z

    def latent(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ, σ of z from an (aggregated or single) representation r (..., r_dim) -> 2 x (..., z_dim)."""
        h = F.relu(self.latent_common(r))
        sigma = self.latent_sigma_min + (1.0 - self.latent_sigma_min) * torch.sigmoid(self.latent_sigma(h))
        return self.latent_mu(h), sigma

    def decode(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of y: x (B, L, D), z (B, code_dim) the context code (:meth:`code`) -> 2 x (B, L, 2)."""
        h = F.relu(self.decoder(torch.cat([x, z[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)))
        return self.head_mu(h), self.output_sigma_min + F.softplus(self.head_sigma(h))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        raise TypeError("AffectiveProcess needs context labels: use affective_processes.predict_window")


def build_ap(input_dim: int, settings: Mapping[str, Any]) -> nn.Module:
    hp = settings["ap"]
    return AffectiveProcess(input_dim, hidden=int(hp["hidden_units"]), r_dim=int(hp["r_dim"]),
                            z_dim=int(hp["z_dim"]), latent_sigma_min=float(hp["latent_sigma_min"]),
                            output_sigma_min=float(hp["output_sigma_min"]), outputs=len(OUTPUT_DIMENSIONS),
                            variant=str(hp.get("variant", "ap")))


def masked_mean(r: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of r (B, L, d) over the rows where mask (B, L) is true -> (B, d) (0 for an empty set)."""
    m = mask.to(r.dtype)[..., None]
    return (r * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


# --------------------------------------------------------------------------------------------
# loss terms (pure)
# --------------------------------------------------------------------------------------------
def gaussian_nll(y: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``-(1/|T|) Σ_t Σ_d log N(y_td; μ_td, σ_td)`` per window.

    Parameters
    ----------
    y, mu, sigma : (B, L, 2) float
        Labels (anything finite where masked), predicted means and standard deviations (> 0).
    mask : (B, L, 2) float
        1 = labelled target entry.

    Returns
    -------
    (B,) float; |T| = rows with at least one labelled entry (a window without one gives 0).
    """
    nll = 0.5 * LOG_2PI + torch.log(sigma) + (y - mu) ** 2 / (2.0 * sigma ** 2)
    rows = (mask.sum(dim=2) > 0).to(y.dtype).sum(dim=1).clamp_min(1.0)
    return (nll * mask).sum(dim=(1, 2)) / rows


def kl_diag_gaussians(mu_q: torch.Tensor, sigma_q: torch.Tensor, mu_p: torch.Tensor, sigma_p: torch.Tensor) -> torch.Tensor:
    """``D_KL(N(μ_q, σ_q²) || N(μ_p, σ_p²))`` of diagonal Gaussians, summed over the last axis.

    ``Σ_j [log(σ_p/σ_q) + (σ_q² + (μ_q - μ_p)²) / (2 σ_p²) - 1/2]``; inputs (..., d) -> (...).
    """
    return (torch.log(sigma_p / sigma_q) + (sigma_q ** 2 + (mu_q - mu_p) ** 2) / (2.0 * sigma_p ** 2) - 0.5).sum(dim=-1)


def output_regulariser(mu: torch.Tensor, sigma: torch.Tensor, rows: torch.Tensor, *, reduce: str = "sum") -> torch.Tensor:
    """``Σ_d D_KL(N(S_d(ỹ^μ), S_d(ỹ^σ)²) || N(0, 1))`` per window (§3.2.4).

    ``S_d`` sums (``reduce="sum"``, the printed formula) or averages (``"mean"``) dimension d over the
    window's real rows. ``D_KL(N(m, s²) || N(0, 1)) = -log s + (s² + m²)/2 - 1/2``.

    Parameters
    ----------
    mu, sigma : (B, L, 2) predicted means and standard deviations.
    rows : (B, L) bool, the window's real rows.

    Returns
    -------
    (B,) float
    """
    if reduce not in REG_REDUCTIONS:
        raise ValueError(f"reduce must be one of {REG_REDUCTIONS}, got {reduce!r}")
    w = rows.to(mu.dtype)[..., None]
    m = (mu * w).sum(dim=1)
    s = (sigma * w).sum(dim=1)
    if reduce == "mean":
        n = w.sum(dim=1).clamp_min(1.0)
        m, s = m / n, s / n
    return (-torch.log(s) + (s ** 2 + m ** 2) / 2.0 - 0.5).sum(dim=-1)


def ap_loss(model: AffectiveProcess, batch: Mapping[str, torch.Tensor], hp: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Eq. 1 on a batch of training windows (:func:`collate_windows`); returns ``total``, ``nll``, ``kl``, ``reg``."""
    x = batch["x"]
    r_c = masked_mean(model.encode(x, batch["ctx_y"]), batch["ctx"])
    det_c = masked_mean(model.encode_det(x, batch["ctx_y"]), batch["ctx"]) if model.variant == "ap_det" else None
    if model.has_latent:
        mu_c, sigma_c = model.latent(r_c)
        z = mu_c + sigma_c * torch.randn_like(sigma_c)
    else:
        z = None
    mu_y, sigma_y = model.decode(x, model.code(r_c, z, det_c))
    nll = gaussian_nll(batch["y"], mu_y, sigma_y, batch["mask"])
    if model.has_latent:
        full = batch["mask"].amin(dim=2) > 0  # target rows labelled in both dimensions
        r_t = model.encode(x, batch["y"])
        mu_t, sigma_t = model.latent(masked_mean(r_t, full))
        n_t = (batch["mask"].sum(dim=2) > 0).to(x.dtype).sum(dim=1).clamp_min(1.0)
        kl = kl_diag_gaussians(mu_t, sigma_t, mu_c, sigma_c) * full.any(dim=1).to(x.dtype) / n_t
    else:  # Deterministic AP: no latent, no KL term
        kl = torch.zeros_like(nll)
    reg = output_regulariser(mu_y, sigma_y, batch["rows"], reduce=str(hp["reg_reduce"]))
    total = nll + float(hp["w_kl"]) * kl + float(hp["w_reg"]) * reg
    return {"total": total.mean(), "nll": nll.mean(), "kl": kl.mean(), "reg": reg.mean()}


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------
def sample_window(rng: np.random.Generator, segments: np.ndarray, *, min_len: int, max_len: int) -> tuple[int, int]:
    """One training window ``[start, stop)`` of valid rows inside one of a video's segments.

    The length is uniform in ``min_len..max_len``; the segment is drawn with probability
    proportional to its rows; a segment shorter than the length is taken whole; the start is
    uniform among the positions where the window fits.

    Parameters
    ----------
    segments : (s, 2) int, ``[start, stop)`` rows, s >= 1.
    """
    length = int(rng.integers(min_len, max_len + 1))
    sizes = (segments[:, 1] - segments[:, 0]).astype(np.float64)
    a, b = segments[int(rng.choice(len(segments), p=sizes / sizes.sum()))]
    n = min(length, int(b - a))
    start = int(a) + int(rng.integers(0, int(b - a) - n + 1))
    return start, start + n


def sample_context(rng: np.random.Generator, candidates: np.ndarray, *, min_context: int) -> np.ndarray:
    """A random context: ``C`` uniform in ``min_context..L`` rows, drawn without replacement.

    Parameters
    ----------
    candidates : (L,) bool, the rows that may be context (all rows, or the labelled ones).

    Returns
    -------
    (L,) bool, ``min(C, candidates.sum())`` rows true.
    """
    L = candidates.size
    c = int(rng.integers(min(min_context, L), L + 1))
    pool = np.flatnonzero(candidates)
    pick = rng.choice(pool, size=min(c, pool.size), replace=False)
    out = np.zeros(L, dtype=bool)
    out[pick] = True
    return out


def lowest_uncertainty(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` rows with the lowest ``scores`` (ties: the earlier row); all if fewer."""
    order = np.argsort(scores, kind="stable")
    out = np.zeros(scores.size, dtype=bool)
    out[order[: min(int(k), scores.size)]] = True
    return out


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def backbone_predictions(video: VideoData) -> np.ndarray:
    """(k, 2) float32 the per-frame CNN's ``pred`` on the video's valid rows (aligned with its features)."""
    path = video.source.path
    try:
        src = rdata.FeatureSource(path, dataset=rdata.PRED_DATASET, max_frame=video.labels.n_frames)
    except AffpipeError as err:
        raise AffpipeError(f"the `ap` regressor needs the backbone's per-frame predictions: {err.cause}",
                           path=path, hint="extract features with a trained per-frame CNN (dataset `pred`); "
                           "features of cnn.mode: pretrained have no prediction") from None
    if not np.array_equal(src.frames, video.frames):
        raise AffpipeError("dataset `pred` and `features` have different valid rows", path=path)
    try:
        return src.rows(0, len(src)).astype(np.float32)
    finally:
        src.close()


class PredCache:
    """Backbone predictions per video, read once (train and devel are small: (k, 2) each)."""

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, video: VideoData) -> np.ndarray:
        key = str(video.source.path)
        if key not in self._cache:
            self._cache[key] = backbone_predictions(video)
        return self._cache[key]


def collate_windows(
    videos: Sequence[VideoData], windows: Sequence[tuple[int, int, int, np.ndarray, bool]],
    scaler: rtrain.FeatureScaler, preds: Callable[[VideoData], np.ndarray],
) -> dict[str, torch.Tensor]:
    """A zero-padded batch of training windows.

    Parameters
    ----------
    windows : (video index, start, stop, context mask (stop-start,) bool, ground-truth context?)

    Returns
    -------
    dict
        ``x`` (B, L, D), ``y`` (B, L, 2) labels (0 where unknown), ``mask`` (B, L, 2), ``rows`` (B, L)
        bool real rows, ``ctx`` (B, L) bool context rows, ``ctx_y`` (B, L, 2) the context's labels
        (ground truth or backbone predictions).
    """
    L = max(b - a for _, a, b, _, _ in windows)
    dim = videos[windows[0][0]].source.dim
    B = len(windows)
    x = np.zeros((B, L, dim), np.float32)
    y = np.zeros((B, L, 2), np.float32)
    mask = np.zeros((B, L, 2), np.float32)
    rows = np.zeros((B, L), bool)
    ctx = np.zeros((B, L), bool)
    ctx_y = np.zeros((B, L, 2), np.float32)
    for j, (vi, a, b, cmask, gt) in enumerate(windows):
        v = videos[vi]
        n = b - a
        x[j, :n] = scaler.for_video(v).apply(v.source.rows(a, b))
        t = v.targets[a:b]
        ok = np.isfinite(t)
        y[j, :n] = np.where(ok, t, 0.0)
        mask[j, :n] = ok
        rows[j, :n] = True
        ctx[j, :n] = cmask
        ctx_y[j, :n] = y[j, :n] if gt else preds(v)[a:b]
    return {"x": torch.from_numpy(x), "y": torch.from_numpy(y), "mask": torch.from_numpy(mask),
            "rows": torch.from_numpy(rows), "ctx": torch.from_numpy(ctx), "ctx_y": torch.from_numpy(ctx_y)}


def draw_windows(
    rng: np.random.Generator, videos: Sequence[VideoData], segs: Sequence[np.ndarray], hp: Mapping[str, Any], n: int
) -> list[tuple[int, int, int, np.ndarray, bool]]:
    """``n`` training windows with their context (see the module docstring)."""
    usable = [i for i, s in enumerate(segs) if len(s)]
    min_ctx = int(hp["min_context"])
    out = []
    for _ in range(n):
        for _attempt in range(MAX_DRAWS):
            vi = usable[int(rng.integers(len(usable)))]
            a, b = sample_window(rng, segs[vi], min_len=int(hp["min_window"]), max_len=int(hp["max_window"]))
            full = np.isfinite(videos[vi].targets[a:b]).all(axis=1)
            if full.sum() < min_ctx:
                continue
            gt = bool(rng.random() < float(hp["gt_context_prob"]))
            cmask = sample_context(rng, full if gt else np.ones(b - a, bool), min_context=min_ctx)
            out.append((vi, a, b, cmask, gt))
            break
        else:
            raise AffpipeError(f"the `ap` regressor found no train window with {min_ctx} labelled rows in "
                               f"{MAX_DRAWS} draws", hint="check the train labels or lower regression.ap.min_context")
    return out


# --------------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_window(model: AffectiveProcess, x: torch.Tensor, yhat: torch.Tensor, *, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-time prediction of one window: context = the ``context`` rows of lowest ``||σ(r_c)||``.

    Parameters
    ----------
    x : (L, D) standardised features; yhat : (L, 2) backbone predictions.

    Returns
    -------
    prediction (L, 2) = the decoder mean with z = μ_C; the selected context (L,) bool.

    The deterministic variant has no σ(r_c) to select by: its context is every row of the window
    (``context`` is not used), so its prediction involves no sampling and no selection.
    """
    r = model.encode(x, yhat)
    if model.has_latent:
        _, sigma_each = model.latent(r)
        sel = lowest_uncertainty(torch.linalg.vector_norm(sigma_each, dim=-1).cpu().numpy(), context)
    else:
        sel = np.ones(len(r), dtype=bool)
    sel_t = torch.from_numpy(sel).to(x.device)
    r_c = r[sel_t].mean(dim=0, keepdim=True)
    z = model.latent(r_c)[0] if model.has_latent else None
    det_c = model.encode_det(x[sel_t], yhat[sel_t]).mean(dim=0, keepdim=True) if model.variant == "ap_det" else None
    mu_y, _ = model.decode(x[None], model.code(r_c, z, det_c))
    return mu_y[0], sel_t


@torch.no_grad()
def predict_ap(
    model: nn.Module, video: VideoData, scaler: rtrain.FeatureScaler, settings: Mapping[str, Any], *,
    device: torch.device, preds: Callable[[VideoData], np.ndarray] = backbone_predictions,
) -> np.ndarray:
    """Predictions on every valid row of one video (windows of ``test_window`` rows, see the docstring).

    Returns
    -------
    (k, 2) float64
    """
    model.eval()
    k = len(video.source)
    if k == 0:
        return np.zeros((0, 2))
    hp = settings["ap"]
    win, ctx = int(hp["test_window"]), int(hp["test_context"])
    yhat_all = preds(video)
    norm = scaler.for_video(video)
    result = np.empty((k, 2))
    for a, b in sequences.segments(video.frames, max_gap=rtrain.max_gap_frames(video, settings)):
        wins = sequences.windows(int(b - a), seq_len=win, hop=win)
        outs = []
        for wa, wb in wins:
            x = torch.from_numpy(norm.apply(video.source.rows(int(a + wa), int(a + wb)))).to(device)
            yh = torch.from_numpy(yhat_all[a + wa : a + wb]).to(device)
            out, _ = predict_window(model, x, yh, context=ctx)
            outs.append(out.float().cpu().numpy().astype(np.float64))
        result[a:b] = sequences.overlap_average(int(b - a), wins, outs)
    if not np.all(np.isfinite(result)):
        raise AffpipeError("the AP model predicted non-finite values", path=video.source.path)
    return result


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def cosine_lr(step: int, *, lr: float, total_steps: int) -> float:
    """Cosine annealing without restarts: ``lr · (1 + cos(π · step / total_steps)) / 2`` (0 from total_steps on)."""
    frac = min(step, total_steps) / max(total_steps, 1)
    return lr * 0.5 * (1.0 + math.cos(math.pi * frac))


def fit_ap(
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
    """Train the Affective Process on ``train``, select the epoch on ``devel``.

    Same contract as :func:`affpipe.regress.train.fit_sequence_model`.
    """
    hp = settings["ap"]
    if int(hp["min_window"]) > int(hp["max_window"]):
        raise AffpipeError(f"regression.ap.min_window ({hp['min_window']}) exceeds regression.ap.max_window "
                           f"({hp['max_window']})")
    preds = PredCache()
    for v in (*train, *devel):
        preds(v)  # fail early, naming the file, when a store has no `pred`
    segs = [sequences.segments(v.frames, max_gap=rtrain.max_gap_frames(v, settings))
            for v in train]
    if not any(np.isfinite(v.targets).all(axis=1).sum() >= int(hp["min_context"]) for v in train):
        raise AffpipeError("the train partition has no video with enough labelled valid rows for `ap`")
    epochs, iters, bs = int(hp["epochs"]), int(hp["iterations_per_epoch"]), int(hp["batch_size"])
    total_steps = epochs * iters
    run = rtrain.start_training(
        spec, train, devel, settings, checkpoint=checkpoint, device=device, fingerprint_files=fingerprint_files,
        units=f"{iters} x {bs} windows of {int(hp['min_window'])}-{int(hp['max_window'])} rows per epoch",
        make_optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=float(hp["lr"]),
                                                  weight_decay=float(hp["weight_decay"])),
        mixed_precision=False, max_epochs=epochs,
    )
    seed, model, optimizer, loop = run.seed, run.model, run.optimizer, run.loop
    clip = settings["grad_clip_norm"]

    def train_epoch(epoch: int) -> dict[str, float]:
        rng = np.random.default_rng([seed, epoch])
        sums = {"total": 0.0, "nll": 0.0, "kl": 0.0, "reg": 0.0}
        for _ in range(iters):
            batch = collate_windows(train, draw_windows(rng, train, segs, hp, bs), loop.scaler, preds)
            batch = {k: v.to(device) for k, v in batch.items()}
            lr = cosine_lr(loop.step, lr=float(hp["lr"]), total_steps=total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            terms = ap_loss(model, batch, hp)
            rtrain.check_finite_loss(terms["total"], epoch=epoch, checkpoint=checkpoint)
            terms["total"].backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            optimizer.step()
            loop.step += 1
            for key in sums:
                sums[key] += float(terms[key].item())
        rec = {("train_loss" if k == "total" else f"train_{k}"): v / max(iters, 1) for k, v in sums.items()}
        rec["lr"] = cosine_lr(loop.step, lr=float(hp["lr"]), total_steps=total_steps)
        return rec

    def predict(v: VideoData) -> np.ndarray:
        return predict_ap(model, v, loop.scaler, settings, device=device, preds=preds)

    return loop.run(train_epoch, predict, devel, n_windows=iters * bs, loss_key="train_loss",
                    on_epoch_end=on_epoch_end)
