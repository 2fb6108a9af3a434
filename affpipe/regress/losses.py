"""Training losses of the sequence regressors, masked (unlabelled entries and padding never count).

Every loss maps a batch of outputs ``out`` (B, L, 2), targets ``y`` (B, L, 2) (any value where
unlabelled) and a mask (B, L, 2) (1 = labelled real row, 0 = unlabelled or padding) to a scalar.

* ``mse`` (:func:`masked_mse`): mean of ``(out - y)^2`` over the masked-in entries (the DFM paper's
  loss for the BGRU).
* ``ccc`` (:func:`masked_ccc_loss`): ``1 - (CCC_v + CCC_a) / 2`` (Kollias & Zafeiriou, Eq. 3), each
  CCC computed over every masked-in entry of its dimension in the batch, concatenated across the
  batch's sequences, with population statistics (ddof 0) as the metric in :mod:`affpipe.metrics`.
"""

from __future__ import annotations

from typing import Callable

import torch

#: Added to the CCC denominator so a batch whose predictions and labels are the same constant gives
#: CCC 0 (loss 1) with finite gradients instead of 0/0.
CCC_EPS = 1e-8


def masked_mse(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``(out - y)^2`` over the entries where ``mask`` is 1 (0 when none is).

    Parameters
    ----------
    out, y, mask : (B, L, D) tensors; ``mask`` float 0/1.

    Returns
    -------
    scalar tensor
    """
    return ((out.float() - y) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)


def masked_ccc(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension CCC over the masked-in entries of a batch (sequences concatenated).

    ``CCC = 2 cov(x, y) / (var x + var y + (mean x - mean y)^2 + CCC_EPS)``, population statistics.

    Parameters
    ----------
    out, y, mask : (B, L, D) tensors; ``mask`` float 0/1.

    Returns
    -------
    ccc : (D,) float32
        0 for a dimension without a masked-in entry.
    present : (D,) bool
        Whether the dimension has a masked-in entry.
    """
    x = out.float().reshape(-1, out.shape[-1])
    t = y.float().reshape(-1, y.shape[-1])
    m = mask.float().reshape(-1, mask.shape[-1])
    n = m.sum(dim=0)
    present = n > 0
    n_safe = n.clamp_min(1.0)
    t = torch.where(m > 0, t, torch.zeros_like(t))  # unlabelled targets may be anything (NaN): never used
    mx = (x * m).sum(dim=0) / n_safe
    my = (t * m).sum(dim=0) / n_safe
    dx, dy = (x - mx) * m, (t - my) * m
    vx = (dx * dx).sum(dim=0) / n_safe
    vy = (dy * dy).sum(dim=0) / n_safe
    cov = (dx * dy).sum(dim=0) / n_safe
    ccc = 2.0 * cov / (vx + vy + (mx - my) ** 2 + CCC_EPS)
    return torch.where(present, ccc, torch.zeros_like(ccc)), present


def masked_ccc_loss(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - mean_d CCC_d`` over the dimensions with a masked-in entry (Kollias & Zafeiriou, Eq. 3).

    With the two dimensions (valence, arousal) labelled this is ``1 - (CCC_v + CCC_a) / 2``; a
    dimension without any labelled entry in the batch is left out of the mean, and a batch without
    any labelled entry gives 0 (with a zero gradient).

    Parameters
    ----------
    out, y, mask : (B, L, D) tensors; ``mask`` float 0/1.

    Returns
    -------
    scalar tensor in [0, 2]
    """
    ccc, present = masked_ccc(out, y, mask)
    k = present.sum()
    if int(k) == 0:
        return out.float().sum() * 0.0
    return 1.0 - ccc[present].sum() / k


#: Losses by name (``regression.loss``).
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": masked_mse,
    "ccc": masked_ccc_loss,
}

#: Name of the training-loss entry of ``training.json``'s history per loss.
LOSS_RECORD_KEYS = {"mse": "train_mse", "ccc": "train_ccc_loss"}
