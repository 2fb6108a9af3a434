"""affpipe: offline batch pipeline for dynamic facial representations and affect regression."""

__version__ = "0.1.0"
