"""A command started now, in the background, and waited for later (the tiny demo run of
tests/conftest.py: it starts with the session and runs beside the tests that do not need it)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
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


class Deferred:
    """``start()`` called in a thread of its own once ``ready()`` is true (polled every second), for
    work that should wait until a core is free (tests/conftest.py starts the real-layout runs and the
    killed-and-resumed run this way once the tiny demo run has ended). :meth:`result` waits for it and
    returns what it returned, or raises what it raised."""

    def __init__(self, start, *, ready=None, on_stop=None):
        self._start, self._ready, self._on_stop = start, ready, on_stop
        self._lock = threading.Lock()
        self._cancelled = False
        self._value = self._error = None
        self._thread = threading.Thread(target=self._run, name="deferred-start", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._ready is not None and not self._ready():
            if self._cancelled:
                return
            time.sleep(1.0)
        if self._cancelled:
            return
        try:
            self._value = self._start()
        except BaseException as err:  # raised again in the test that asks for the result
            self._error = err

    def done(self) -> bool:
        return not self._thread.is_alive()

    def peek(self):
        """The value if it has been returned already, else None."""
        return self._value

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value

    def stop(self) -> None:
        """Do not start if not started yet; otherwise ``on_stop(value)`` once it has returned (an
        interrupted session: it ends what is still running)."""
        self._cancelled = True
        if self._on_stop is not None:
            self._on_stop(self._value)
        if self._thread.is_alive():
            self._thread.join(timeout=120)
            if self._on_stop is not None:
                self._on_stop(self._value)
