"""A loaded demo identity (its own module: generate.py and preview.py share it without an import cycle)."""

from __future__ import annotations

from dataclasses import dataclass

from affpipe.demo.render import Rig
from affpipe.demo.sources import SourceFace


@dataclass
class Identity:
    """A loaded identity: its source face, rig, partition and valence range."""

    name: str
    slug: str
    partition: str
    face: SourceFace
    rig: Rig
    valence_min: float
