"""Starting a server as a process of its own and waiting until it answers: the main job's offer, the real-server
test and the load benchmark all start `loyal serve` (the benchmark `feast serve` too) this one way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from loyal.errors import LoyalError


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port now."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


@contextmanager
def started(command: list[str], ready_url: str, log: Path, env: dict | None = None, cwd: Path | None = None,
            timeout: float = 300.0) -> Iterator[subprocess.Popen]:
    """Run `command` (in a session of its own, output to `log`) until `ready_url` answers 200; stop the whole
    session when the block ends."""
    with log.open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise LoyalError(f"{Path(command[0]).name} did not become ready: "
                                 f"{log.read_text(errors='replace')[-1500:]}")
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


@contextmanager
def loyal_service(home: Path, log: Path, timeout: float = 300.0) -> Iterator[str]:
    """`loyal serve` for `home` on a free loopback port; yields its base URL."""
    port = free_port()
    loyal = Path(sys.executable).parent / "loyal"
    # The service tracks into `home`, whatever this process was pointed at.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"LOYAL_HOME": str(home)}
    base = f"http://127.0.0.1:{port}"
    with started([str(loyal), "serve", "--port", str(port)], f"{base}/readyz", log, env=env, timeout=timeout):
        yield base
