"""The DFM paper's regressor: a bidirectional GRU over the feature sequence (registered as ``bgru``)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from affpipe.regress.registry import OUTPUT_DIMENSIONS


class BGRU(nn.Module):
    """Bidirectional GRU regressor with a linear per-row output (DFM paper §4, Fig. 4).

    Parameters
    ----------
    input_dim : int
        Feature size D (4096 for VGG-16 fc6).
    hidden_units : int
        Units per direction (the paper: 200).
    layers : int
        Stacked GRU layers (the paper: 1).
    dropout : float
        Dropout on the input features and between stacked layers (the paper: none).
    outputs : int
        Output columns (2: valence, arousal).

    Notes
    -----
    ``forward(x, lengths)`` takes a zero-padded batch ``x`` (B, L, D) and the true lengths (B,);
    sequences are packed so the backward direction starts at each sequence's real last row, not
    in the padding. Returns (B, L, outputs); rows beyond a sequence's length are 0.
    """

    def __init__(self, input_dim: int, *, hidden_units: int, layers: int = 1, dropout: float = 0.0, outputs: int = 2):
        super().__init__()
        self.input_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(
            input_size=input_dim,
            hidden_size=hidden_units,
            num_layers=layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.head = nn.Linear(2 * hidden_units, outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        total = x.shape[1]
        x = self.input_dropout(x)
        packed = pack_padded_sequence(x, lengths.detach().to("cpu", torch.int64), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=total)
        return self.head(out)


def build_bgru(input_dim: int, settings: Mapping[str, Any]) -> nn.Module:
    hp = settings["bgru"]
    return BGRU(input_dim, hidden_units=int(hp["hidden_units"]), layers=int(hp["layers"]),
                dropout=float(hp["dropout"]), outputs=len(OUTPUT_DIMENSIONS))
