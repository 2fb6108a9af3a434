"""Self-attention baseline: a Transformer encoder over the feature sequence, per-frame output.

The in-house baseline the Affective Processes paper compares with (Sanchez et al. 2021, §6
"In-house baselines": "an architecture based on the Transformer encoder: a 2-layer MultiHead
Self-Attention encoder with 32 learnable heads, each of 512 dimensions", L = 30 frames for valence and
arousal; about 4.2 M parameters). Registered as regressor ``attention``; hyper-parameters in
``regression.attention``; trained by the generic sequence trainer (:mod:`affpipe.regress.train`:
masked MSE over windows of ``regression.attention.seq_len`` rows, the paper's L = 30, which with
``attention.train_hop`` replaces the top-level ``seq_len`` and ``train_hop`` for this regressor;
:func:`prepare_settings`).

Our reading of the architecture: model width ``d_model`` 512 (the paper's "512 dimensions"; its
features are 512-D), 32 heads (16 dimensions each), 2 encoder layers (post-norm, ReLU) with a
feed-forward width of 1024 -- which gives the paper's ~4.2 M parameters. Since our features need not be
512-D, a linear layer first maps them to ``d_model``; sinusoidal positional encodings (Vaswani et
al. 2017) are added to that; a linear layer maps each row's output to (valence, arousal). Padded rows
are excluded from the attention by a key-padding mask.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from affpipe.errors import ConfigError
from affpipe.regress.registry import OUTPUT_DIMENSIONS

# the settings it trains with are torch-free, with its registration in affpipe.regress.regressors
from affpipe.regress.regressors import ATTENTION_TRAINING_OVERRIDES as TRAINING_OVERRIDES  # noqa: F401
from affpipe.regress.regressors import attention_settings as prepare_settings  # noqa: F401

#: the wavelength base of the sinusoidal positional encoding (Vaswani et al. 2017)
PE_BASE = 10000.0


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """Positional encodings (length, dim): ``PE[p, 2i] = sin(p / B^(2i/dim))``, ``PE[p, 2i+1] = cos(...)``, B = 10000."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    i = torch.arange(0, dim, 2, dtype=torch.float32)
    angle = pos / PE_BASE ** (i / dim)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return pe


class SelfAttentionRegressor(nn.Module):
    """Transformer-encoder regressor with a per-row linear output.

    Parameters
    ----------
    input_dim : int
        Feature size D.
    d_model, heads, layers, feedforward : int
        Encoder width, attention heads (``d_model % heads == 0``), layers, feed-forward width.
    dropout : float
        Dropout inside the encoder layers and on the encoded input.
    outputs : int
        Output columns (2).

    Notes
    -----
    ``forward(x, lengths)``: ``x`` (B, L, D) zero-padded, ``lengths`` (B,) -> (B, L, outputs); a real
    row's output does not depend on the padding.
    """

    def __init__(self, input_dim: int, *, d_model: int, heads: int, layers: int, feedforward: int,
                 dropout: float = 0.1, outputs: int = 2):
        super().__init__()
        if d_model % heads:
            raise ConfigError(f"regression.attention.d_model ({d_model}) must be a multiple of "
                              f"regression.attention.heads ({heads})")
        self.d_model = d_model
        self.input = nn.Linear(input_dim, d_model)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=feedforward, dropout=dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        h = self.input(x) + sinusoidal_encoding(L, self.d_model).to(x.device, x.dtype)
        pad = torch.arange(L)[None, :] >= lengths.to("cpu", torch.int64)[:, None]  # True = padding
        h = self.encoder(self.dropout(h), src_key_padding_mask=pad.to(x.device))
        return self.head(h)


def build_attention(input_dim: int, settings: Mapping[str, Any]) -> nn.Module:
    hp = settings["attention"]
    return SelfAttentionRegressor(input_dim, d_model=int(hp["d_model"]), heads=int(hp["heads"]),
                                  layers=int(hp["layers"]), feedforward=int(hp["feedforward"]),
                                  dropout=float(hp["dropout"]), outputs=len(OUTPUT_DIMENSIONS))
