"""How a command ends when what it runs on fails: a Ray address where no head answers (at once, in one line), a
head lost during the run, Ctrl-C (within seconds, one line), and SIGKILL (its temporary Prefect server does not
outlive it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from prefect_processes import free_port
from yume_core.config import ConfigError
from yume_core.errors import InputError


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def _env(tmp_path: Path, **extra: str) -> dict:
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), **extra)
    env.pop("PREFECT_API_URL", None)
    return env


def test_an_address_where_no_head_answers_ends_the_command_in_one_line_before_anything_starts(tmp_path):
    (tmp_path / "clips.csv").write_text("videoFile,cameraFile\n")
    (tmp_path / "videos").mkdir()
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    done = subprocess.run(_cli("real-world", "--csv", str(tmp_path / "clips.csv"), "--videos", str(tmp_path / "videos"),
                               "--trajectories", str(tmp_path / "videos"), "-o", str(tmp_path / "out"),
                               "--ray-address", address), env=_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {address}: no Ray head answers at this address (tcp {address}: Connection "
                           "refused); check that `ray start --head` runs there"), line
    assert "YUME_RAY_CONNECT_TIMEOUT" in line
    assert time.monotonic() - started < 30  # Python's start; Ray alone used to retry for over ten minutes
    assert not (tmp_path / "prefect-home").exists() and not (tmp_path / "out").exists()  # nothing started


def test_the_runner_checks_an_address_from_the_settings_too(monkeypatch):
    from pipelines.runners import RunnerConfig, task_runner

    monkeypatch.setenv("YUME_RAY_CONNECT_TIMEOUT", "2")
    with pytest.raises(InputError, match=r"no Ray head answers .*now 2 s\)$"):
        with task_runner(RunnerConfig(kind="ray", ray_address=f"127.0.0.1:{free_port()}")):
            pass


def test_addresses_and_the_connect_timeout_are_read_as_ray_reads_them(monkeypatch):
    from pipelines.runners import connect_timeout, head_endpoint

    assert head_endpoint("10.0.0.1:6380") == ("10.0.0.1", 6380)
    assert head_endpoint("head") == ("head", 6379)
    assert head_endpoint("ray://head") == ("head", 10001) and head_endpoint("auto") is None
    with pytest.raises(ConfigError, match="no valid port"):
        head_endpoint("head:http")
    monkeypatch.delenv("YUME_RAY_CONNECT_TIMEOUT", raising=False)
    assert connect_timeout() == 30
    for bad in ("0", "soon"):
        monkeypatch.setenv("YUME_RAY_CONNECT_TIMEOUT", bad)
        with pytest.raises(ConfigError, match="YUME_RAY_CONNECT_TIMEOUT"):
            connect_timeout()


def test_a_head_that_stops_answering_is_reported_once_it_was_silent_for_the_timeout(monkeypatch):
    from pipelines.runners import watch_head

    monkeypatch.setenv("YUME_RAY_CONNECT_TIMEOUT", "1")
    head = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{head.getsockname()[1]}"
    lost: list[InputError] = []
    reported = threading.Event()

    def on_lost(error: InputError) -> None:
        lost.append(error)
        reported.set()

    with pytest.raises(RuntimeError, match="a bug"):  # a failure while the head answers is the failure
        with watch_head(address, on_lost, interval=0.1):
            raise RuntimeError("a bug")
    with watch_head(address, on_lost, interval=0.1):
        time.sleep(1.5)
        assert not lost  # a head that answers is left alone
        head.close()
        silent = time.monotonic()
        assert reported.wait(10)
        assert 0.8 <= time.monotonic() - silent < 5  # the last answer came up to one probe before the close
    [error] = lost
    assert str(error).startswith(f"{address}: lost the Ray head: no answer for 1 s (tcp {address}: ")
    assert "run the same command again: it resumes" in str(error)

    # a run that fails (Ray raises once its raylet went with the head) before the silence is long enough
    with pytest.raises(InputError, match="lost the Ray head: the run failed with RuntimeError and the head does "
                                         "not answer") as caught:
        with watch_head(address, on_lost, interval=0.1):
            raise RuntimeError("The task's local raylet died")
    assert isinstance(caught.value.__cause__, RuntimeError) and len(lost) == 1


@pytest.mark.slow
def test_a_port_that_answers_but_is_no_ray_head_fails_within_the_timeout(tmp_path):
    """Something listens (a dashboard's port, say) but speaks no GCS: `ray.init` gets one bounded attempt."""
    pytest.importorskip("prefect_ray")
    impostor = socket.create_server(("0.0.0.0", 0))
    port = impostor.getsockname()[1]
    script = ("from pipelines.runners import RunnerConfig, task_runner\n"
              f"with task_runner(RunnerConfig(kind='ray', ray_address='127.0.0.1:{port}')):\n    pass\n")
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path, YUME_RAY_CONNECT_TIMEOUT="3"),
                              capture_output=True, text=True, timeout=120)
    finally:
        impostor.close()
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"yume_core.errors.InputError: 127.0.0.1:{port}: no Ray head answers at this address "
                           "(its port accepts connections, but no Ray head answered in 3 s"), done.stderr[-2000:]
    assert time.monotonic() - started < 60  # one attempt of 3 s (plus Ray's own 10 s of connecting); not 13 minutes


@pytest.mark.slow
def test_a_head_lost_during_the_run_ends_the_command_in_one_line_and_the_rerun_resumes(tmp_path):
    pytest.importorskip("prefect_ray")
    from test_ray_flows import Cluster
    from yume_core.sample_data import make_sekai_sample

    sample = make_sekai_sample(tmp_path / "sekai", n_clips=6, n_frames=40, size=(64, 36))
    cluster = Cluster()
    proc = None
    try:
        cluster.start_node("--head", "--port", str(cluster.port), "--num-cpus", "1", "--num-gpus", "0",
                           "--include-dashboard", "false", "--dashboard-port", str(free_port()),
                           "--ray-client-server-port", str(free_port()))
        command = _cli("real-world", "--csv", str(sample.csv_path), "--videos", str(sample.videos_dir),
                       "--trajectories", str(sample.cameras_dir), "-o", str(tmp_path / "out"), "--batch-size", "1")
        proc = subprocess.Popen([*command, "--ray-address", cluster.address],
                                env=_env(tmp_path, YUME_RAY_CONNECT_TIMEOUT="5"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 240
        while not list((tmp_path / "out").glob("_work/*/part-*.parquet")):  # a batch is done: the run is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        cluster.stop()
        lost = time.monotonic()
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - lost
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        cluster.stop()
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.rstrip().splitlines()[-1].startswith(f"error: {cluster.address}: lost the Ray head: "), err[-3000:]
    assert took < 30, took  # Ray alone aborts the driver after 60 s, with a C++ error
    # the same command without the cluster resumes: the batches finished before the loss are kept as they are
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("_work/*/part-*.parquet")}
    assert kept
    done = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["in"], summary["ok"]) == (6, 6), summary


# ------------------------------------------------------------------------------------- Ctrl-C and kill -9


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        children = [c for c, p in parents.items() if p == parent]
        found.update(children)
        todo.extend(children)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on (from /proc: its socket inodes in the kernel's table)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _start_real_world(tmp_path: Path) -> tuple[subprocess.Popen, int, int]:
    """`yume-data real-world` on a small sample, in a session of its own; returns it once its Prefect server
    answers, with that server's pid and port."""
    from yume_core.sample_data import make_sekai_sample

    sample = make_sekai_sample(tmp_path / "sekai", n_clips=4, n_frames=40, size=(64, 36))
    proc = subprocess.Popen(_cli("real-world", "--csv", str(sample.csv_path), "--videos", str(sample.videos_dir),
                                 "--trajectories", str(sample.cameras_dir), "-o", str(tmp_path / "out")),
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        for child in _descendants(proc.pid):
            for port in _listening_ports(child):
                if _answers(port):
                    return proc, child, port
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no Prefect server came up: {proc.communicate()[1][-2000:]}")


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


@pytest.mark.slow
def test_a_command_killed_with_sigkill_leaves_no_server_or_other_child_behind(tmp_path):
    proc, server, port = _start_real_world(tmp_path)
    children = _descendants(proc.pid)
    try:
        assert server in children and not _refused(port)
        os.kill(proc.pid, signal.SIGKILL)  # the command alone, as the OOM killer would
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (any(map(_alive, children)) or not _refused(port)):
            time.sleep(0.2)
        assert not [pid for pid in children if _alive(pid)], "children outlived the command"
        assert _refused(port), "the command's Prefect server still listens"
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_ctrl_c_ends_a_command_within_seconds_in_one_line(tmp_path):
    proc, server, port = _start_real_world(tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "out" / "_work").exists():  # the flow runs
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends: to the whole foreground group
        interrupted = time.monotonic()
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - interrupted
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.rstrip().splitlines()[-1] == ("interrupted: finished batches and shards are kept; run the same "
                                             "command again to resume")
    assert took < 20, took  # it was minutes, retrying a server the Ctrl-C had stopped
    assert not _alive(server) and _refused(port)
