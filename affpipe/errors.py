"""Error types that carry the offending file and the cause, for one-line user-facing messages."""

from __future__ import annotations

import os


class AffpipeError(Exception):
    """An error a user can act on.

    The CLI prints ``str(err)`` on one line and exits with status 2; no traceback.

    Parameters
    ----------
    cause : str
        What went wrong, phrased for the user.
    path : str or os.PathLike, optional
        The file (or directory) the error is about. It is put in front of the message.
    hint : str, optional
        What the user can do about it (e.g. which config key to set).
    """

    def __init__(self, cause: str, *, path: str | os.PathLike | None = None, hint: str | None = None):
        self.cause = cause
        self.path = None if path is None else os.fspath(path)
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        msg = f"{self.path}: {self.cause}" if self.path else self.cause
        if self.hint:
            msg += f" ({self.hint})"
        return msg


class ConfigError(AffpipeError):
    """Invalid or incomplete configuration."""


class DatasetError(AffpipeError):
    """A dataset tree or label file that does not match what its adapter expects."""


class VideoError(AffpipeError):
    """A video that cannot be opened or decoded."""
