"""A command started now, in the background, and waited for later (the tiny demo run of
tests/conftest.py: it starts with the session and runs beside the tests that do not need it)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


class BackgroundRun:
    """``cmd`` started at once in its own process group (so :meth:`stop` ends it with every process it
    started), its stdout and stderr written to files in ``log_dir``."""

    def __init__(self, cmd: list[str], *, cwd: Path, env: dict | None, log_dir: Path, timeout: float):
        self.cmd, self.timeout = cmd, timeout
        self.stdout, self.stderr = log_dir / "stdout.txt", log_dir / "stderr.txt"
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.deadline = time.monotonic() + timeout

    def wait(self) -> subprocess.CompletedProcess:
        """Wait until the command ends (at most ``timeout`` seconds after it started) and return its
        exit status and output; past the timeout it is stopped and this raises."""
        try:
            code = self.proc.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"`{' '.join(self.cmd)}` did not finish within {self.timeout:.0f} s; "
                                 f"its output: {self.stdout}, {self.stderr}") from None
        return subprocess.CompletedProcess(self.cmd, code, self.stdout.read_text(errors="replace"),
                                           self.stderr.read_text(errors="replace"))

    def stop(self) -> None:
        """End the command and everything it started, if still running (an interrupted session)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
