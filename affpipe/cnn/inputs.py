"""Input representations of the per-frame CNN and their mapping to network input.

An *input* names one representation or a ``+``-joined pair of them (two branches, two CNNs, features
concatenated, as in Fig. 4b of the DFM paper):

=========  ===========================  ==============================================  ========
name       store                        datasets                                        channels
=========  ===========================  ==============================================  ========
``sfa``    ``static/{video}.h5``        ``sfa`` (uint8)                                 3
``sfs``    ``static/{video}.h5``        ``sfs`` (uint8)                                 3
``dfa``    ``dynamic/{video}.h5``       ``dfa`` (real-valued)                           3
``dfs``    ``dynamic/{video}.h5``       ``dfs`` (real-valued)                           3
``dfm``    ``dynamic/{video}.h5``       ``dfm`` (real-valued)                           3
``mdr``    ``static`` + ``dr``          ``sfa`` + ``dr_T3`` + ``dr_T5`` (real-valued)   9
=========  ===========================  ==============================================  ========

(``mdr``'s DR levels are the ``cnn.mdr_levels`` setting.) Real-valued images are always decoded
through :meth:`affpipe.io.h5store.StoreReader.read_image` semantics (uint8 ``q * scale + offset``
per row, or float16).

**Mapping to network input** (the same at training and extraction; recorded in ``model.pt``):

1. to [0, 1], per image and per component: uint8 images ``x / 255``; real-valued images by
   ``dynamic_scaling``: ``maxabs`` (default) ``0.5 + 0.5 x / max|x|`` -- zero, i.e. the stable
   pixels the DFM masks out and "no change", stays exactly mid-grey in every image, and the sign
   (brighter vs darker over the window) is kept; ``minmax`` ``(x - min) / (max - min)`` -- Bilen
   et al.'s min-max to 0-255, where zero lands at an image-dependent grey. An all-constant image
   maps to 0.5.
2. ``(x - input_mean) / input_std`` per channel (defaults 0.5 / 0.5, i.e. [-1, 1]).
3. channels first, float32, optionally resized (bilinear, antialiased) to ``input_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from affpipe.errors import ConfigError

#: Store kinds and the stage attribute their files carry (None: not checked).
STORE_STAGES = {"static": "static", "dynamic": "dynamic", "dr": None}
#: Store kind -> ``results/{ds}/<dir>/{video}.h5``.
STORE_DIRS = {"static": "static", "dynamic": "dynamic", "dr": "dr/videos"}
#: uint8 static image -> [0, 1].
UINT8_MAX = 255.0
#: [0, 1] value of a real-valued zero under ``maxabs`` and of constant images.
MID_GREY = 0.5
DYNAMIC_SCALINGS = ("maxabs", "minmax")
PAIR_SEPARATOR = "+"
SINGLE_REPRESENTATIONS = ("sfa", "sfs", "dfa", "dfs", "dfm", "mdr")


@dataclass(frozen=True)
class Component:
    """One stored image stack that forms 3 channels of a branch's input."""

    store: str      # "static" | "dynamic" | "dr"
    dataset: str    # dataset name in that store
    real: bool      # real-valued (dynamic scaling) or uint8 (x / 255)
    channels: int = 3


@dataclass(frozen=True)
class Branch:
    """One CNN branch: a representation made of one or more components, channels concatenated."""

    name: str
    components: tuple[Component, ...]

    @property
    def channels(self) -> int:
        return sum(c.channels for c in self.components)


@dataclass(frozen=True)
class InputSpec:
    """A parsed input name: its branches and the stores it reads."""

    name: str
    branches: tuple[Branch, ...]

    @property
    def stores(self) -> tuple[str, ...]:
        """Store kinds needed, in first-use order (the first is the *primary* store: its rows are the output rows)."""
        out: list[str] = []
        for b in self.branches:
            for c in b.components:
                if c.store not in out:
                    out.append(c.store)
        return tuple(out)

    @property
    def components(self) -> tuple[Component, ...]:
        """Distinct components over all branches, in first-use order."""
        out: list[Component] = []
        for b in self.branches:
            for c in b.components:
                if c not in out:
                    out.append(c)
        return tuple(out)

    @property
    def branch_channels(self) -> list[int]:
        return [b.channels for b in self.branches]

    def to_plain(self) -> list[dict]:
        """Plain-typed description (for ``model.pt`` metadata and store attributes)."""
        return [{"name": b.name, "channels": b.channels,
                 "components": [{"store": c.store, "dataset": c.dataset, "real": c.real} for c in b.components]}
                for b in self.branches]


def representation(name: str, *, mdr_levels: Sequence[int] = (3, 5)) -> Branch:
    """The branch of one representation name (``sfa`` ... ``mdr``)."""
    if name in ("sfa", "sfs"):
        return Branch(name, (Component("static", name, False),))
    if name in ("dfa", "dfs", "dfm"):
        return Branch(name, (Component("dynamic", name, True),))
    if name == "mdr":
        comps = [Component("static", "sfa", False)] + [Component("dr", f"dr_T{int(t)}", True) for t in mdr_levels]
        return Branch(name, tuple(comps))
    raise ConfigError(
        f"unknown input representation {name!r}; known: {', '.join(SINGLE_REPRESENTATIONS)}, or two joined by "
        f"'{PAIR_SEPARATOR}' (e.g. dfa+dfs)"
    )


def parse_input(name: str, *, mdr_levels: Sequence[int] = (3, 5)) -> InputSpec:
    """Parse ``"dfm"``, ``"mdr"`` or a pair ``"dfa+dfs"`` into an :class:`InputSpec`.

    Raises
    ------
    ConfigError
        Unknown representation, repeated branch, or more than two branches.
    """
    parts = name.split(PAIR_SEPARATOR)
    if len(parts) > 2:
        raise ConfigError(f"input {name!r} has {len(parts)} branches; at most two are supported (e.g. dfa+dfs)")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"input {name!r} repeats a branch")
    return InputSpec(name, tuple(representation(p, mdr_levels=mdr_levels) for p in parts))


# ------------------------------------------------------------------------------------------------
# mapping to network input (pure functions)
# ------------------------------------------------------------------------------------------------
def to_unit(image: np.ndarray, *, real: bool, scaling: str = "maxabs") -> np.ndarray:
    """Map one stored image to [0, 1].

    Parameters
    ----------
    image : (H, W, C) uint8 or float
        Decoded image (real-valued images already ``q * scale + offset``).
    real : bool
        Real-valued (dynamic image, DR) rather than uint8.
    scaling : {"maxabs", "minmax"}
        Mapping of real-valued images (module docstring).

    Returns
    -------
    (H, W, C) float32 in [0, 1]
    """
    if not real:
        return np.asarray(image, dtype=np.float32) * np.float32(1.0 / UINT8_MAX)
    x = np.asarray(image, dtype=np.float32)
    if scaling == "maxabs":
        m = float(np.max(np.abs(x))) if x.size else 0.0
        if m == 0.0:
            return np.full(x.shape, MID_GREY, dtype=np.float32)
        return (np.float32(MID_GREY) + np.float32(MID_GREY / m) * x).astype(np.float32)
    if scaling == "minmax":
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if hi == lo:
            return np.full(x.shape, MID_GREY, dtype=np.float32)
        return ((x - np.float32(lo)) * np.float32(1.0 / (hi - lo))).astype(np.float32)
    raise ConfigError(f"unknown dynamic_scaling {scaling!r}; known: {', '.join(DYNAMIC_SCALINGS)}")


def channel_stats(values: Sequence[float], channels: int, *, what: str) -> np.ndarray:
    """Broadcast ``input_mean`` / ``input_std`` (1 or ``channels`` values) to ``(channels, 1, 1)`` float32."""
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    if v.size == 1:
        v = np.repeat(v, channels)
    elif v.size == 3 and channels % 3 == 0:
        v = np.tile(v, channels // 3)  # per-RGB statistics repeated over each 3-channel component
    if v.size != channels:
        raise ConfigError(f"cnn.{what} has {len(values)} values; the input has {channels} channels "
                          "(give 1 value, 3 per-RGB values, or one per channel)")
    return v.reshape(channels, 1, 1)


def branch_tensor(images: Sequence[np.ndarray], components: Sequence[Component], *, scaling: str,
                  mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Build one branch's network input from its decoded component images.

    Parameters
    ----------
    images : sequence of (H, W, 3) arrays
        One decoded image per component.
    components : sequence of Component
    scaling : str
        ``dynamic_scaling``.
    mean, std : (C, 1, 1) float32
        From :func:`channel_stats`.

    Returns
    -------
    (C, H, W) float32
    """
    unit = [to_unit(img, real=c.real, scaling=scaling) for img, c in zip(images, components)]
    x = np.concatenate(unit, axis=2) if len(unit) > 1 else unit[0]
    x = np.ascontiguousarray(x.transpose(2, 0, 1))
    return (x - mean) / std


def resize_batch(x, size: int | None):
    """Resize a ``(B, C, H, W)`` tensor to ``size x size`` (bilinear, antialiased); None = unchanged."""
    if size is None or (x.shape[-1] == size and x.shape[-2] == size):
        return x
    import torch.nn.functional as F

    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
