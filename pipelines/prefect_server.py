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
database under PREFECT_HOME. Its listening socket is opened here, before the server process starts, and handed to
it: the address is known at once, and requests sent while the server is still starting wait in the socket's queue
instead of failing, so the command goes on with its imports and settings while the server starts beside it.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time

_servers: list[subprocess.Popen] = []  # started by this process
PARENT_GRACE = 5.0  # seconds a server whose parent died gets to shut down cleanly before it exits anyway


def start() -> str:
    """Start the server as this process's child; returns its API URL (it answers once it has started)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    with sock:
        proc = subprocess.Popen([sys.executable, "-m", __name__, str(os.getpid()), str(sock.fileno())],
                                pass_fds=[sock.fileno()], stdin=subprocess.DEVNULL,
                                env={**os.environ, "PREFECT_UI_ENABLED": "false"}, start_new_session=True)
        port = sock.getsockname()[1]
    _servers.append(proc)
    atexit.register(stop, proc)
    return f"http://127.0.0.1:{port}/api"


def exit_status() -> int | None:
    """The exit status of this process's server if it ended before the command stopped it, else None: a command
    that fails then has lost its Prefect API."""
    return next((proc.returncode for proc in _servers if proc.poll() is not None), None)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (uvicorn shuts down cleanly), SIGKILL after 5 s."""
    if proc in _servers:
        _servers.remove(proc)
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


def _serve(parent: int, fd: int) -> None:
    _follow_parent(parent)
    import uvicorn
    from prefect.server.api.server import create_app

    config = uvicorn.Config(lambda: create_app(ephemeral=True, final=True), factory=True, log_level="error",
                            lifespan="on")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
