"""What the tests that start Prefect's own processes (server, worker, the CLI) share: an environment of their own,
a server on loopback, and a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFECT = str(Path(sys.executable).with_name("prefect"))


def prefect_env(tmp_path: Path, **extra) -> dict:
    """The environment for a Prefect process of one test: its own PREFECT_HOME, no analytics, no prompts, no
    server unless `extra` names one (PREFECT_API_URL)."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_CLI_PROMPT="false",
        PREFECT_WORKER_QUERY_SECONDS="1",
    )
    env.pop("PREFECT_API_URL", None)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """End a process started in its own session, and everything it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


@contextmanager
def prefect_server(tmp_path: Path, timeout: float = 180) -> Iterator[str]:
    """`prefect server start` on a free loopback port with this test's PREFECT_HOME; yields its API URL once it
    answers, and stops it (and what it started) after."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=prefect_env(tmp_path), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=5):
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("prefect server did not come up") from None
                time.sleep(0.5)
        yield api
    finally:
        stop(proc)
