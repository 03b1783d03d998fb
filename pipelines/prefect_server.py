"""The temporary Prefect server of a command, started by the command as a child that cannot outlive it.

Without PREFECT_API_URL, Prefect starts a temporary server (uvicorn serving its API app) the first time a client
needs one. That process is a plain child: a command killed with SIGKILL (the OOM killer, a scheduler's preemption,
`kill -9`) leaves it orphaned and listening, and a Ctrl-C in the terminal reaches it as well as the command (one
process group), so the interrupted command spends minutes retrying a server that is gone before it exits. The CLI
therefore starts that server itself, before Prefect is imported, and points PREFECT_API_URL at it (`start`):

- the server watches its parent: on Linux the kernel signals it when the parent dies (prctl PR_SET_PDEATHSIG), and
  a watchdog thread ends it once its parent pid changes (other systems, or a parent gone before the prctl);
- it runs in a session of its own, so the terminal's Ctrl-C stops only the command, which reports its runs to a
  live server and exits in seconds; the command stops the server as it exits (atexit).

The server is Prefect's own temporary one: the same app in ephemeral mode (no UI, no background services), its
database under PREFECT_HOME, on a free loopback port the server binds itself and reports on its stdout.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from yume_core.errors import InputError

STARTUP_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"  # the setting Prefect's own server start reads
STARTUP_DEFAULT = 60.0  # Prefect's 20 s is short for a first start, which creates the database, on a busy machine
PARENT_GRACE = 5.0  # seconds a server whose parent died gets to shut down cleanly before it exits anyway


def start(home: Path) -> str:
    """Start the server as this process's child; returns its API URL once it answers. Raises InputError naming
    Prefect's home when it exits or does not answer within the startup timeout."""
    timeout = float(os.environ.get(STARTUP_ENV) or STARTUP_DEFAULT)
    proc = subprocess.Popen([sys.executable, "-m", __name__, str(os.getpid())], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, env={**os.environ, "PREFECT_UI_ENABLED": "false"},
                            start_new_session=True)
    atexit.register(stop, proc)
    deadline = time.monotonic() + timeout
    try:
        port = _read_port(proc, deadline)
        url = f"http://127.0.0.1:{port}/api"
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.2)
    except TimeoutError:
        stop(proc)
        what = (f"exited with status {proc.returncode}" if proc.returncode not in (None, -signal.SIGTERM)
                else f"did not answer within {timeout:g} s")
        raise InputError(home, f"Prefect's temporary server for this command {what} (its errors are above)",
                         f"check that this folder (PREFECT_HOME) is writable, raise {STARTUP_ENV} on a busy "
                         "machine, or set PREFECT_API_URL to a running Prefect server") from None
    return url


def _read_port(proc: subprocess.Popen, deadline: float) -> int:
    """The port the server reports on its first line of stdout."""
    line = b""
    while not line.endswith(b"\n"):
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([proc.stdout], [], [], wait)[0]:
            raise TimeoutError
        chunk = os.read(proc.stdout.fileno(), 64)
        if not chunk:  # the server exited before binding
            proc.wait()
            raise TimeoutError
        line += chunk
    proc.stdout.close()
    return int(line)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (uvicorn shuts down cleanly), SIGKILL after 5 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _follow_parent(parent: int) -> None:
    """End this process with its parent: SIGTERM from the kernel when the parent dies (Linux), and a watchdog that
    exits once the parent pid changes (it was reparented), after PARENT_GRACE seconds for a clean shutdown."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(PARENT_GRACE)
        os._exit(1)

    if os.getppid() != parent:  # died before the prctl took effect
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _serve(parent: int) -> None:
    import socket

    _follow_parent(parent)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sys.stdout.write(f"{sock.getsockname()[1]}\n")
    sys.stdout.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nobody reads the pipe from here on

    import uvicorn
    from prefect.server.api.server import create_app

    config = uvicorn.Config(lambda: create_app(ephemeral=True, final=True), factory=True, log_level="error",
                            lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
