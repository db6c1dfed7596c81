"""Run `gpu-rca serve` as a child process on a free loopback port (benchmarks, tests and scripts use it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

from gpu_rca.schemas.errors import GpuRcaError

_LISTENING = re.compile(r"listening on (http://\S+)")


class ServeProcess:
    """A running `gpu-rca serve --port 0`; `url` is where it listens. Use as a context manager."""

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        command = [sys.executable, "-m", "gpu_rca", "serve", "--db", str(db_path), "--port", "0", *args]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ if env is None else env),
        )
        self.stderr_lines: list[str] = []
        self._ready = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if not self._ready.wait(start_timeout_s) or not self.url:
            self.process.kill()
            self.process.wait()
            self._close_pipe()
            raise GpuRcaError("gpu-rca serve did not start: " + (" | ".join(self.stderr_lines[-5:]) or "no output"))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line.rstrip("\n"))
            match = _LISTENING.search(line)
            if match and not self.url:
                self.url = match.group(1)
                self._ready.set()
        self._ready.set()  # exited before listening

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (a clean shutdown: the queue drains, the store closes) and the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_pipe()
        return self.process.returncode

    def _close_pipe(self) -> None:
        self._reader.join(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()

    @property
    def stderr(self) -> str:
        """Everything the server wrote on stderr so far."""
        return "\n".join(self.stderr_lines)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["ServeProcess"]
