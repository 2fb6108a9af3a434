"""The image-to-image UNet of the DR paper: one masked face image I_t -> its DR d_t (same size).

Ronneberger et al.'s UNet as the paper uses it (input and output S×S×3): ``depth`` down-sampling
steps, each a block of two 3×3 convolutions (GroupNorm, ReLU) followed by 2×2 max pooling, with
the channel count doubling from ``width``; a bottleneck block; ``depth`` up-sampling steps (2×2
transposed convolution, concatenation with the encoder's feature map of the same size, a block);
a 1×1 convolution to 3 channels and ``tanh``, so a DR has values in [-1, 1].

Choices the paper leaves open, and why:

* GroupNorm instead of BatchNorm: the output does not depend on the other images of a batch, so
  training and inference compute the same function and small batches are fine.
* Transposed convolutions for up-sampling: their backward pass is deterministic on CPU and GPU
  (bilinear/nearest up-sampling backward is not on CUDA).
* Inputs whose side is not a multiple of ``2**depth`` are zero-padded (bottom/right) and the
  output cropped back, so any S works (112 = 7·16, 224 = 14·16 need no padding at depth 4).

Paper-scale default: ``width=64, depth=4`` (31 M parameters at 224×224). The demo uses a much
narrower network (see ``affpipe/schemas/dr.schema.yaml``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from affpipe.dr import IMAGE_CHANNELS

#: GroupNorm groups per block (fewer when a block has fewer channels)
NORM_GROUPS = 8
KERNEL = 3


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`UNet` (stored in every model file).

    Parameters
    ----------
    width : int
        Channels of the first block (doubled at every down-sampling step).
    depth : int
        Number of 2× down-sampling steps.
    in_channels, out_channels : int
        3 (RGB image in, 3-channel DR out).
    """

    width: int = 64
    depth: int = 4
    in_channels: int = IMAGE_CHANNELS
    out_channels: int = IMAGE_CHANNELS

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 0:
            raise ValueError(f"UNet width must be >= 1 and depth >= 0, got width={self.width}, depth={self.depth}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = next(g for g in range(min(NORM_GROUPS, cout), 0, -1) if cout % g == 0)
    return nn.Sequential(
        nn.Conv2d(cin, cout, KERNEL, padding=KERNEL // 2, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, KERNEL, padding=KERNEL // 2, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """UNet mapping (B, 3, H, W) images to (B, 3, H, W) DRs in [-1, 1].

    Parameters
    ----------
    config : UNetConfig
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        w, depth = config.width, config.depth
        chans = [w * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = config.in_channels
        for c in chans[:-1]:
            self.down.append(_block(cin, c))
            cin = c
        self.bottleneck = _block(cin, chans[-1])
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in range(depth - 1, -1, -1):
            self.up.append(nn.ConvTranspose2d(chans[i + 1], chans[i], kernel_size=2, stride=2))
            self.up_blocks.append(_block(2 * chans[i], chans[i]))
        self.head = nn.Conv2d(chans[0], config.out_channels, kernel_size=1)

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this (``2**depth``)."""
        return 2**self.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Parameters: x (B, in_channels, H, W) float. Returns (B, out_channels, H, W) in [-1, 1]."""
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, block in zip(self.up, self.up_blocks):
            x = up(x)
            x = block(torch.cat([skips.pop(), x], dim=1))
        x = torch.tanh(self.head(x))
        return x[..., :h, :w]


def n_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
