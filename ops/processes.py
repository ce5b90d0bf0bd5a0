"""Components as child processes, run exactly as an operator runs them (`hl7bus <command>`):
start them, wait for a condition while watching that none has died, stop them in order.

The demo runs the bus this way, and so do the end-to-end and fault tests.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class ProcessError(RuntimeError):
    """A component exited on its own, or a condition did not hold in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Processes:
    """Running `hl7bus` components by name, each writing its output to `logs`/<name>.log."""

    logs: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.running[name] = subprocess.Popen(
            [sys.executable, "-m", "hl7bus.ops.cli", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the caller only; it stops them in order
        )

    def check(self) -> None:
        """Raise ProcessError if a component has exited."""
        for name, proc in self.running.items():
            if proc.poll() is not None:
                raise ProcessError(
                    f"{name} exited with code {proc.returncode}; see {self.logs}/{name}.log"
                )

    def wait_for(
        self, what: str, done: Callable[[], bool], timeout: float, interval: float = 0.5
    ) -> None:
        """Poll `done` until it holds; fail as soon as a component exits (its log says why)
        rather than at the deadline."""
        deadline = time.monotonic() + timeout
        while not done():
            self.check()
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"timed out after {timeout:.0f}s waiting for {what}; logs: {self.logs}"
                )
            time.sleep(interval)

    def stop(self, name: str, timeout: float = 20.0) -> None:
        """SIGTERM (a clean stop), SIGKILL if it is not gone after `timeout` seconds."""
        proc = self.running.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)
