"""Backbones (one factory), the regression head and the one/two-branch per-frame regressor.

timm-style split: every backbone maps an input batch ``(B, C, H, W)`` float32 to a feature batch
``(B, num_features)`` with :meth:`forward_features`; the task head lives outside the backbone, in
:class:`PerFrameRegressor`, which concatenates the features of its branches (one per input
representation, e.g. ``dfa+dfs``) and regresses (valence, arousal).

Backbones (:data:`BACKBONES`, built by :func:`create_backbone`):

* ``vgg16`` -- VGG-16 as in the DFM paper: 13 3x3 convolutions in 5 blocks, adaptive average
  pooling to 7x7 (so any input size >= 32 works, as in torchvision), ``fc6`` (25088 -> 4096) + ReLU.
  The features are the fc6 activations (4096-D). The module layout follows torchvision
  (``features.N``), so converted ImageNet / VGG-Face state dicts load directly
  (:func:`load_pretrained`); fc7 becomes the head's hidden layer.
* ``small`` -- a 4-block CNN (conv-BN-ReLU, 16/32/64/128 channels; a 5x5 stride-2 stem and 2x2 max
  pooling after every block, so 112x112 becomes 28x28 before the first 3x3 block), adaptive average
  pooling to 4x4 (keeping the coarse layout of eyes, brows and mouth), a 256-D fully connected
  feature layer. About 0.62 M parameters and 15 M multiply-adds at 112x112 (VGG-16 at 224: 15.5 G):
  it trains from scratch on the demo's few thousand frames on a CPU.

Taps (:meth:`Backbone.forward_taps`, for the multi-level CNN-RNN of Kollias & Zafeiriou): besides the
``fc`` features, the output of the **2nd pooling layer** (``low``) and of the **last pooling layer**
(``high``), each global-average-pooled over its spatial positions to one value per channel. The
paper feeds the 2nd pool (after the 4th convolution of VGG-Face) and the last pool (after the 13th)
to their own GRUs; flattening them (VGG-16 at 224x224: 56x56x128 and 7x7x512 values) is too large to
store per frame, so both are reduced by global average pooling (the NOTES decision for the 2nd pool,
extended to the last pool here for the same reason). Widths (:attr:`Backbone.tap_dims`): VGG-16
low 128, high 512, fc 4096; small low 32 (after block 1), high 128 (after block 3), fc 256.

No weights are ever downloaded: without ``weights`` a network starts from its seeded initialisation.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Sequence

import torch
from torch import nn

from affpipe.errors import AffpipeError, ConfigError

log = logging.getLogger(__name__)

#: Number of regression outputs: (valence, arousal).
NUM_OUTPUTS = 2

#: VGG-16 convolution widths per block (torchvision's configuration "D").
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
#: Spatial size of the VGG feature map fed to fc6 (adaptive pooling target).
VGG_POOL = 7
#: fc6 / fc7 width.
VGG_FC = 4096
#: Smallest input side VGG-16 accepts (five 2x2 poolings).
VGG_MIN_SIZE = 32

#: Standard deviation of the output layer's initial weights.
HEAD_INIT_STD = 0.01

SMALL_CHANNELS = (16, 32, 64, 128)
SMALL_POOL = 4
SMALL_FEATURES = 256
SMALL_MIN_SIZE = 32  # five 2x downsamplings (stem stride, stem pool, three block pools)

#: Names of the taps of :meth:`Backbone.forward_taps`, from the lowest layer to the highest.
TAP_NAMES = ("low", "high", "fc")
#: Index (in ``VGG16.features``) of the 2nd max-pooling layer (after conv 4 = conv2_2).
VGG_LOW_TAP_INDEX = 9


class Backbone(nn.Module):
    """Base class: ``forward_features(x) -> (B, num_features)``; ``forward`` is the same."""

    #: Width of the feature vector.
    num_features: int
    #: Hidden width of the default regression head (0 = linear head).
    default_head_hidden: int
    #: Name of the first convolution's weight in :meth:`state_dict` (for weight inflation).
    first_conv: str

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        """Multi-level features of one batch.

        Parameters
        ----------
        x : (B, C, H, W) float32

        Returns
        -------
        dict of str to Tensor
            ``low`` (B, tap_dims["low"]): the 2nd pooling layer's output, global-average-pooled;
            ``high`` (B, tap_dims["high"]): the last pooling layer's output, global-average-pooled;
            ``fc`` (B, num_features): exactly :meth:`forward_features`.
        """
        raise NotImplementedError

    @property
    def tap_dims(self) -> dict[str, int]:
        """Width of each tap of :meth:`forward_taps`, in :data:`TAP_NAMES` order."""
        raise NotImplementedError  # pragma: no cover - abstract

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def global_average_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C): mean over the spatial positions."""
    return x.mean(dim=(2, 3))


class VGG16(Backbone):
    """VGG-16 up to fc6 (+ReLU), torchvision module layout.

    Parameters
    ----------
    in_channels : int
        Input channels (3 for images, 9 for ``mdr``).
    """

    default_head_hidden = VGG_FC
    first_conv = "features.0.weight"

    def __init__(self, *, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for block in VGG16_BLOCKS:
            for width in block:
                layers += [nn.Conv2d(c, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                c = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((VGG_POOL, VGG_POOL))
        self.fc6 = nn.Linear(c * VGG_POOL * VGG_POOL, VGG_FC)
        self.num_features = VGG_FC
        self.in_channels = in_channels
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return torch.relu(self.fc6(torch.flatten(x, 1)))

    @property
    def tap_dims(self) -> dict[str, int]:
        return {"low": VGG16_BLOCKS[1][-1], "high": VGG16_BLOCKS[-1][-1], "fc": self.num_features}

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self.features[: VGG_LOW_TAP_INDEX + 1](x)
        last = self.features[VGG_LOW_TAP_INDEX + 1 :](low)
        fc = torch.relu(self.fc6(torch.flatten(self.avgpool(last), 1)))
        return {"low": global_average_pool(low), "high": global_average_pool(last), "fc": fc}


class SmallCNN(Backbone):
    """A small conv-BN-ReLU network for CPU demos (256-D features; module docstring).

    Parameters
    ----------
    in_channels : int
        Input channels.
    """

    default_head_hidden = 0
    first_conv = "stem.0.weight"

    def __init__(self, *, in_channels: int = 3):
        super().__init__()
        c0, c1, c2, c3 = SMALL_CHANNELS
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c0, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(c0),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(2))

        def block(a: int, b: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True), nn.MaxPool2d(2))

        self.blocks = nn.Sequential(block(c0, c1), block(c1, c2), block(c2, c3))
        self.pool = nn.AdaptiveAvgPool2d((SMALL_POOL, SMALL_POOL))
        self.fc = nn.Linear(c3 * SMALL_POOL * SMALL_POOL, SMALL_FEATURES)
        self.num_features = SMALL_FEATURES
        self.in_channels = in_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        return torch.relu(self.fc(torch.flatten(x, 1)))

    @property
    def tap_dims(self) -> dict[str, int]:
        return {"low": SMALL_CHANNELS[1], "high": SMALL_CHANNELS[-1], "fc": self.num_features}

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # the stem ends with the 1st pooling layer, block 1 with the 2nd, block 3 with the last
        low = self.blocks[0](self.stem(x))
        last = self.blocks[1:](low)
        fc = torch.relu(self.fc(torch.flatten(self.pool(last), 1)))
        return {"low": global_average_pool(low), "high": global_average_pool(last), "fc": fc}


#: Backbone constructors by name, with the smallest input side each accepts.
BACKBONES: dict[str, tuple[Callable[..., Backbone], int]] = {
    "vgg16": (VGG16, VGG_MIN_SIZE),
    "small": (SmallCNN, SMALL_MIN_SIZE),
}


def create_backbone(name: str, *, in_channels: int = 3, input_size: int | None = None) -> Backbone:
    """Build a backbone by name (the single factory).

    Parameters
    ----------
    name : {"vgg16", "small"}
    in_channels : int
        Channels of the input images.
    input_size : int, optional
        Input side, checked against the backbone's minimum.

    Raises
    ------
    ConfigError
        Unknown name, or an input too small for the network.
    """
    try:
        ctor, min_size = BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r} (config key cnn.backbone); known: {', '.join(BACKBONES)}") from None
    if input_size is not None and input_size < min_size:
        raise ConfigError(f"backbone {name} needs inputs of at least {min_size}x{min_size} pixels, got {input_size}",
                          hint="set cnn.input_size")
    return ctor(in_channels=in_channels)


class RegressionHead(nn.Module):
    """Dropout -> [Linear(in, hidden) -> ReLU -> Dropout] -> Linear(., 2).

    Parameters
    ----------
    in_features : int
    hidden : int
        0 = a linear head.
    dropout : float
    """

    def __init__(self, in_features: int, *, hidden: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.hidden = hidden
        if hidden:
            self.fc1 = nn.Linear(in_features, hidden)
            nn.init.normal_(self.fc1.weight, 0, 0.01)
            nn.init.zeros_(self.fc1.bias)
        self.out = nn.Linear(hidden or in_features, NUM_OUTPUTS)
        nn.init.normal_(self.out.weight, 0, HEAD_INIT_STD)  # start near 0 = the centre of the label range
        nn.init.zeros_(self.out.bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        f = self.drop(f)
        if self.hidden:
            f = self.drop(torch.relu(self.fc1(f)))
        return self.out(f)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` in channels-last memory order (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last)


class PerFrameRegressor(nn.Module):
    """One backbone per input branch, features concatenated, one regression head.

    Parameters
    ----------
    backbone : str
        Backbone name (:data:`BACKBONES`), the same for every branch.
    branch_channels : sequence of int
        Input channels of each branch (``[3]`` for ``dfm``, ``[9]`` for ``mdr``, ``[3, 3]`` for
        ``dfa+dfs``).
    head_hidden : int or None
        Hidden width of the head; None = the backbone's default.
    dropout : float
    input_size : int, optional
        Checked against the backbone's minimum input size.
    """

    def __init__(self, backbone: str, *, branch_channels: Sequence[int], head_hidden: int | None = None,
                 dropout: float = 0.5, input_size: int | None = None):
        super().__init__()
        if not branch_channels:
            raise ValueError("a model needs at least one branch")
        self.branches = nn.ModuleList(
            create_backbone(backbone, in_channels=c, input_size=input_size) for c in branch_channels
        )
        # channels-last (NHWC) weights and inputs: on CPU the convolutions and max-pooling of both
        # backbones run about twice as fast as in NCHW (a SmallCNN training step at 80 px, one thread:
        # 432 -> 950 frames/s); the model computes the same function, up to float rounding
        self.branches.to(memory_format=torch.channels_last)
        self.num_features = sum(b.num_features for b in self.branches)
        hidden = self.branches[0].default_head_hidden if head_hidden is None else head_hidden
        self.head = RegressionHead(self.num_features, hidden=hidden, dropout=dropout)

    def forward_features(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenated branch features, ``(B, num_features)``; ``xs[i]`` is ``(B, C_i, H, W)``."""
        if len(xs) != len(self.branches):
            raise ValueError(f"model has {len(self.branches)} branches, got {len(xs)} inputs")
        feats = [b.forward_features(_nhwc(x)) for b, x in zip(self.branches, xs)]
        return feats[0] if len(feats) == 1 else torch.cat(feats, dim=1)

    @property
    def tap_dims(self) -> dict[str, int]:
        """Width of each tap of :meth:`forward_taps` (summed over the branches)."""
        return {name: sum(b.tap_dims[name] for b in self.branches) for name in TAP_NAMES}

    def forward_taps(self, xs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every tap of every branch, each concatenated over the branches (branch order).

        Returns
        -------
        dict of str to Tensor
            ``low``, ``high``, ``fc`` with shapes ``(B, tap_dims[name])``; ``fc`` equals
            :meth:`forward_features`.
        """
        if len(xs) != len(self.branches):
            raise ValueError(f"model has {len(self.branches)} branches, got {len(xs)} inputs")
        taps = [b.forward_taps(_nhwc(x)) for b, x in zip(self.branches, xs)]
        return {name: taps[0][name] if len(taps) == 1 else torch.cat([t[name] for t in taps], dim=1)
                for name in TAP_NAMES}

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(valence, arousal) from features, ``(B, 2)``."""
        return self.head(features)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.forward_head(self.forward_features(xs))


# ------------------------------------------------------------------------------------------------
# user-supplied weights
# ------------------------------------------------------------------------------------------------
#: VGG-Face (Caffe / Oxford) layer names -> torchvision-layout names of :class:`VGG16`.
VGGFACE_NAMES = {
    "conv1_1": "features.0", "conv1_2": "features.2",
    "conv2_1": "features.5", "conv2_2": "features.7",
    "conv3_1": "features.10", "conv3_2": "features.12", "conv3_3": "features.14",
    "conv4_1": "features.17", "conv4_2": "features.19", "conv4_3": "features.21",
    "conv5_1": "features.24", "conv5_2": "features.26", "conv5_3": "features.28",
    "fc6": "fc6", "fc7": "fc7", "fc8": "fc8",
}
#: torchvision classifier indices -> names used here.
TORCHVISION_CLASSIFIER = {"classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": "fc8"}


def _canonical_vgg_key(key: str) -> str:
    """Map a torchvision or VGG-Face VGG-16 key to :class:`VGG16`'s (``fc7``/``fc8`` kept as such)."""
    for prefix in ("module.", "model.", "backbone."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    layer, _, param = key.rpartition(".")
    if layer in VGGFACE_NAMES:
        return f"{VGGFACE_NAMES[layer]}.{param}"
    if layer in TORCHVISION_CLASSIFIER:
        return f"{TORCHVISION_CLASSIFIER[layer]}.{param}"
    return key


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict (or an affpipe ``model.pt``'s first branch) with ``weights_only=True``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise AffpipeError("weights file does not exist", path=path, hint="config key cnn.weights") from None
    except Exception as exc:  # unpickling errors, truncated files, non-tensor content
        raise AffpipeError(
            f"cannot load as a PyTorch state dict with weights_only=True ({type(exc).__name__}: {exc})",
            path=path,
            hint="convert the weights to a plain state dict of tensors (torch.save(model.state_dict(), path))",
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        state = obj["state_dict"]
        if any(k.startswith("branches.0.") for k in state):  # an affpipe model.pt: take its first branch
            state = {k[len("branches.0."):]: v for k, v in state.items() if k.startswith("branches.0.")}
        obj = state
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise AffpipeError("is not a state dict (a mapping of parameter names to tensors)", path=path,
                           hint="config key cnn.weights")
    return obj


def inflate_conv(weight: torch.Tensor, in_channels: int, *, mode: str) -> torch.Tensor:
    """Inflate a first-conv kernel ``(O, 3, k, k)`` to ``(O, in_channels, k, k)``.

    ``repeat`` tiles the RGB kernel channel-wise (channel c takes RGB kernel c mod 3) and ``mean``
    gives every channel the RGB mean; both multiply by ``3 / in_channels`` so that an input made of
    repeated copies of an image gives the same response as the image with the original kernel.
    """
    out, c, kh, kw = weight.shape
    if mode == "repeat":
        idx = torch.arange(in_channels) % c
        w = weight[:, idx]
    elif mode == "mean":
        w = weight.mean(dim=1, keepdim=True).expand(out, in_channels, kh, kw)
    else:
        raise ValueError(f"unknown inflation mode {mode!r}")
    return (w * (c / in_channels)).contiguous()


def load_pretrained(model: PerFrameRegressor, path: str | os.PathLike, *, backbone: str, inflate: str = "error") -> dict[str, list[str]]:
    """Load user-supplied weights into every branch of ``model`` (and fc7 into a one-branch head).

    Parameters
    ----------
    model : PerFrameRegressor
    path : path
        State dict file (see :func:`read_state_dict`; VGG-16 keys in torchvision or VGG-Face naming).
    backbone : str
        The model's backbone name.
    inflate : {"error", "repeat", "mean"}
        First-conv channel mismatch policy (:func:`inflate_conv`).

    Returns
    -------
    dict
        ``loaded`` (backbone keys), ``ignored`` (keys of the file not used), ``inflated`` (keys).

    Raises
    ------
    AffpipeError
        Naming the file and the layer when a backbone parameter is missing or has another shape.
    """
    raw = read_state_dict(path)
    state = {(_canonical_vgg_key(k) if backbone == "vgg16" else k): v for k, v in raw.items()}
    report: dict[str, list[str]] = {"loaded": [], "ignored": [], "inflated": []}
    for bi, branch in enumerate(model.branches):
        target = branch.state_dict()
        new = {}
        for key, param in target.items():
            if key not in state:
                if key.endswith("num_batches_tracked"):
                    continue
                layer, _, param = key.rpartition(".")
                face = {v: k for k, v in VGGFACE_NAMES.items()}.get(layer) if backbone == "vgg16" else None
                raise AffpipeError(
                    f"weights have no parameter {key!r}{f' (VGG-Face {face}.{param})' if face else ''} needed by the "
                    f"{backbone} backbone "
                    f"(file has {len(state)} entries, e.g. {', '.join(list(state)[:4])})",
                    path=path, hint="supply weights of the same architecture as cnn.backbone",
                )
            value = state[key]
            if value.shape != param.shape:
                is_first = key == branch.first_conv
                if is_first and value.ndim == 4 and value.shape[1] == 3 and value.shape[0] == param.shape[0] \
                        and value.shape[2:] == param.shape[2:] and inflate != "error":
                    value = inflate_conv(value, param.shape[1], mode=inflate)
                    if bi == 0:
                        report["inflated"].append(key)
                elif is_first and value.ndim == 4 and value.shape[1] != param.shape[1]:
                    raise AffpipeError(
                        f"first convolution {key!r} of the weights takes {value.shape[1]} input channels, the input "
                        f"has {param.shape[1]} (weights {tuple(value.shape)}, layer {tuple(param.shape)})",
                        path=path,
                        hint="set cnn.inflate_first_conv to repeat or mean to inflate the RGB kernel to "
                        f"{param.shape[1]} channels, or train this input from scratch (cnn.weights: null)",
                    )
                else:
                    raise AffpipeError(
                        f"layer {key!r} has shape {tuple(value.shape)} in the weights, the {backbone} backbone needs "
                        f"{tuple(param.shape)}",
                        path=path, hint="supply weights of the same architecture as cnn.backbone",
                    )
            new[key] = value
        branch.load_state_dict(new, strict=False)
        if bi == 0:
            report["loaded"] = sorted(new)
    used = set(report["loaded"])
    head = model.head
    fc7_w, fc7_b = state.get("fc7.weight"), state.get("fc7.bias")
    if backbone == "vgg16" and fc7_w is not None and fc7_b is not None:
        if len(model.branches) == 1 and head.hidden and head.fc1.weight.shape == fc7_w.shape:
            head.fc1.weight.data.copy_(fc7_w)
            head.fc1.bias.data.copy_(fc7_b)
            used |= {"fc7.weight", "fc7.bias"}
            report["loaded"] += ["head.fc1.weight (fc7)", "head.fc1.bias (fc7)"]
        else:
            log.info("cnn: fc7 of %s not used (the head is %s on %d-D concatenated features)", path,
                     f"{head.hidden}-wide" if head.hidden else "linear", model.num_features)
    report["ignored"] = sorted(k for k in state if k not in used)
    return report
