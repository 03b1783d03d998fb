"""A real Ray cluster on loopback for the tests and benchmarks that need one: a head and more nodes started with
`ray start`, as an operator starts them, each in a process group of its own, so that stopping (or killing) a node
ends exactly the processes it started (`ray stop` would end every Ray process of the user on this machine)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prefect_processes import free_port

RAY = str(Path(sys.executable).with_name("ray"))
TIMEOUT = 120
# The head notices a node that stopped answering after health_check_period_ms x health_check_failure_threshold
# (Ray's defaults: 3 s x 5, plus the check's own timeout); a test that kills a node waits for that, so shorter here.
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                   "RAY_health_check_timeout_ms": "1000"}


class Cluster:
    """Nodes started with the `ray start` CLI; `env`: extra environment of every node (its workers inherit it)."""

    def __init__(self, env: dict[str, str] | None = None):
        # short: Ray puts unix sockets under it, whose paths may not exceed 107 bytes
        self.temp = tempfile.mkdtemp(prefix="yr-", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.groups: list[int] = []  # one per node, the head's first
        self.killed: set[int] = set()

    def start_node(self, *args: str) -> int:
        """Start a node; returns its process group."""
        common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--temp-dir", self.temp,
                  "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())]
        proc = subprocess.Popen([RAY, "start", *args, *common], start_new_session=True, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.groups.append(proc.pid)
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, out[-3000:]
        return proc.pid

    def start_head(self, cpus: int = 2, gpus: int = 0) -> "Cluster":
        self.start_node("--head", "--port", str(self.port), "--num-cpus", str(cpus), "--num-gpus", str(gpus),
                        "--include-dashboard", "false", "--dashboard-port", str(free_port()),
                        "--ray-client-server-port", str(free_port()))
        return self

    def add_node(self, cpus: int = 1, gpus: int = 0) -> int:
        """A node joining the head; `gpus` are only a count to Ray here (a node without any GPU can announce some),
        which is all its scheduler looks at. Returns the node's process group."""
        return self.start_node("--address", self.address, "--num-cpus", str(cpus), "--num-gpus", str(gpus))

    def start(self) -> "Cluster":
        """A head with 2 CPUs and a node with 1: the cluster most tests run on."""
        self.start_head()
        self.add_node()
        return self

    def kill_node(self, group: int) -> None:
        """Kill every process of the node at once (its workers too, which Ray starts in sessions of their own), as a
        node lost to preemption or a power cut."""
        table = processes()
        parents = {pid: ppid for pid, ppid, _, _ in table}
        node = {pid for pid, _, pgrp, _ in table if pgrp == group}
        for pid, _, _, _ in table:
            if _ancestor_in(pid, parents, node):
                os.kill(pid, signal.SIGKILL)
        self.killed.add(group)

    def stop(self) -> None:
        # gcs_server and raylet linger after SIGTERM, so SIGKILL follows soon, as `ray stop --force` sends
        for sig, wait in ((signal.SIGTERM, 2), (signal.SIGKILL, 5)):
            for group in self.groups:
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + wait
            while time.time() < deadline and self.alive():
                time.sleep(0.2)
        shutil.rmtree(self.temp, ignore_errors=True)

    def alive(self) -> list[int]:
        """Processes left in the nodes' groups (zombies excepted: their parent reaps them)."""
        return [pid for pid, _, group, _ in processes() if group in self.groups]

    def node_of(self, title: str) -> int | None:
        """The node (its process group) that runs the process whose title starts with `title` (Ray titles a worker
        process by what it runs: `ray::BatchActor...` for an actor of that class), or None while there is none."""
        table = processes()
        parents = {pid: ppid for pid, ppid, _, _ in table}
        for group in self.groups:
            node = {pid for pid, _, pgrp, _ in table if pgrp == group}
            if any(cmdline.startswith(title) and _ancestor_in(pid, parents, node) for pid, _, _, cmdline in table):
                return group
        return None


    def running(self, group: int) -> list[str]:
        """Titles of the node's worker processes that run something (Ray titles an idle one `ray::IDLE`, a busy one
        by its task or actor: `ray::clips-00002`)."""
        table = processes()
        parents = {pid: ppid for pid, ppid, _, _ in table}
        node = {pid for pid, _, pgrp, _ in table if pgrp == group}
        return [cmd for pid, _, _, cmd in table if cmd.startswith("ray::") and not cmd.startswith("ray::IDLE")
                and _ancestor_in(pid, parents, node)]


def _ancestor_in(pid: int, parents: dict[int, int], pids: set[int]) -> bool:
    """`pid` or one of its ancestors is in `pids`."""
    while pid > 1:
        if pid in pids:
            return True
        pid = parents.get(pid, 0)
    return False


def processes() -> list[tuple[int, int, int, str]]:
    """(pid, parent pid, process group, command line) of every live process of this machine (zombies excepted)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            found.append((int(pid), int(fields[1]), int(fields[2]), cmdline.strip()))
    return found
