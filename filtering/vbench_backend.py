"""The `vbench` scoring backend: VBench itself, run by the python of its own environment as a subprocess.

VBench (`pip install vbench`, 0.1.5) pins numpy<2, transformers==4.33.2 and timm<=1.0.12, so it cannot be imported
next to this project. Users give it its own environment on the GPU nodes and point `VBenchScorer(python=...)` at that
environment's python; each `score` call links the batch's videos into a fresh folder and runs
`filtering/vbench_runner.py` there once, which calls `VBench(...).evaluate(..., mode="custom_input")` and leaves
VBench's own results JSON, read back here.

One runner process per `score` call: VBench loads its models inside every `evaluate` call, so the flow sends
hundreds of videos per batch and the model load (and the environment's import time) is paid once per batch. The
flip side is VBench's: a video that makes a dimension raise fails the whole call, so the batch's rows fail
together (`vbench_failed`, with VBench's traceback in the error) and the run goes on with the next batch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

from filtering.dimensions import check_dimensions
from filtering.scorer import VideoScores
from yume_core.config import ConfigError

RUNNER = Path(__file__).with_name("vbench_runner.py")
RESULTS_NAME = "batch"  # VBench writes {out}/{name}_eval_results.json
IMPORT_CHECK_TIMEOUT = 300  # `import vbench` imports torch, CLIP, pyiqa...: slow on a cold shared filesystem
STDERR_TAIL_LINES = 15
# VBench's per-video imaging_quality is MUSIQ's 0-100 score; only its dimension mean is divided by 100. Scaled here
# so every score is on the scale of VBench's leaderboard (filtering.dimensions.NORMALIZE).
PER_VIDEO_SCALE = {"imaging_quality": 0.01}

SETUP_HELP = (
    "VBench (pip package vbench 0.1.5) pins numpy<2, transformers==4.33.2 and timm<=1.0.12, so it must live in its "
    "own environment, not this project's. Make one on the GPU node, e.g. `python3.10 -m venv /opt/vbench-env && "
    "/opt/vbench-env/bin/pip install torch torchvision && /opt/vbench-env/bin/pip install vbench` (a CUDA build of "
    "torch first), and pass its python (/opt/vbench-env/bin/python) as the VBench python option. VBench fetches its "
    "model weights at run time into VBENCH_CACHE_DIR (default ~/.cache/vbench): on air-gapped nodes fill that folder "
    "first on a machine with network, pass it as the cache dir and load checkpoints locally (local=True)."
)


class VBenchUnavailable(ConfigError):
    """The given python cannot run VBench; the message says how to set it up."""


class _RunFailed(Exception):
    """The runner gave no usable results; the message is the error every sent row gets."""


class VBenchScorer:
    """Scores videos on VBench quality dimensions by running VBench in its own environment.

    `cache_dir` becomes VBENCH_CACHE_DIR of the VBench process (VBench reads it at import, so it is set before the
    process starts); `local=True` is VBench's `load_ckpt_from_local`: CLIP and DINO are read from that folder
    instead of being fetched. `env` adds variables to the process (e.g. CUDA_VISIBLE_DEVICES, PYTHONPATH).
    `timeout` (seconds) bounds one `score` call. Each call works in a fresh folder under `work_dir` (default: the
    system temp dir) that is always removed afterwards: it only holds links to the videos and VBench's JSON files,
    and everything a person needs from a failure is put in the rows' errors.
    """

    def __init__(self, dimensions: Iterable[str], python: str | os.PathLike, device: str = "cuda",
                 cache_dir: str | os.PathLike | None = None, work_dir: str | os.PathLike | None = None,
                 timeout: float | None = None, local: bool = False, env: Mapping[str, str] | None = None):
        self.dimensions = check_dimensions(dimensions)
        self.python = os.fspath(python)
        self.device = device
        self.work_dir = None if work_dir is None else os.fspath(work_dir)
        self.timeout = timeout
        self.local = local
        self.env = _runner_env(env, cache_dir)
        _check_vbench(self.python, self.env)

    def score(self, items: Iterable[tuple[str, str | os.PathLike]]) -> list[VideoScores]:
        """One `VideoScores` per `(key, video_path)`, in input order; one VBench run for all videos that exist."""
        items = [(key, os.fspath(path)) for key, path in items]
        sent = {i: path for i, (_, path) in enumerate(items) if os.path.isfile(path)}
        scores, failure = {}, None
        if sent:
            try:
                scores = self._run(sent)
            except _RunFailed as exc:
                failure = str(exc)
        return [self._video_scores(key, path, i in sent, scores.get(i, {}), failure)
                for i, (key, path) in enumerate(items)]

    def close(self) -> None:
        """Nothing stays open between calls: each `score` runs and ends its own VBench process."""

    def __enter__(self) -> VBenchScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, paths: dict[int, str]) -> dict[int, dict[str, float]]:
        """Scores by item index of `paths` (item index -> video path); _RunFailed when VBench gives no usable ones."""
        folder = tempfile.mkdtemp(prefix="yume-vbench-", dir=self.work_dir)
        try:
            videos, out = os.path.join(folder, "videos"), os.path.join(folder, "out")
            names = _stage_videos(paths, videos)
            self._invoke(videos, out)
            return _read_results(os.path.join(out, f"{RESULTS_NAME}_eval_results.json"), self.dimensions, names)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _invoke(self, videos: str, out: str) -> None:
        cmd = [self.python, str(RUNNER), "--videos", videos, "--out", out, "--name", RESULTS_NAME,
               "--dimensions", *self.dimensions, "--device", self.device] + (["--local"] if self.local else [])
        try:
            proc = subprocess.run(cmd, env=self.env, timeout=self.timeout, capture_output=True, text=True,
                                  errors="replace", stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise _RunFailed(f"VBench ran past the {self.timeout:g} s timeout and was killed{_tail(exc.stderr)}")
        if proc.returncode != 0:
            raise _RunFailed(f"VBench failed (exit code {proc.returncode}){_tail(proc.stderr)}")

    def _video_scores(self, key: str, path: str, sent: bool, got: dict[str, float], failure: str | None
                      ) -> VideoScores:
        if not sent:
            return VideoScores(key, reason="video_missing", error=f"video file not found: {path}")
        if failure is not None:
            return VideoScores(key, reason="vbench_failed", error=failure)
        missing = [d for d in self.dimensions if d not in got]
        if missing:
            return VideoScores(key, reason="vbench_no_result",
                               error=f"VBench returned no {', '.join(missing)} score for {path} (it skips videos "
                                     "it reads no frames from)")
        return VideoScores(key, scores={d: got[d] for d in self.dimensions})


def _runner_env(extra: Mapping[str, str] | None, cache_dir: str | os.PathLike | None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    if cache_dir is not None:
        env["VBENCH_CACHE_DIR"] = os.fspath(cache_dir)
    return env


def _check_vbench(python: str, env: Mapping[str, str]) -> None:
    """Fail at construction, not after a batch was staged, when `python` cannot import vbench."""
    try:
        proc = subprocess.run([python, "-c", "import vbench"], env=env, timeout=IMPORT_CHECK_TIMEOUT,
                              capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise VBenchUnavailable(f"cannot run the VBench python {python!r}: {exc}.\n{SETUP_HELP}") from None
    except subprocess.TimeoutExpired:
        raise VBenchUnavailable(f"`{python} -c 'import vbench'` took over {IMPORT_CHECK_TIMEOUT} s.\n{SETUP_HELP}")
    if proc.returncode != 0:
        raise VBenchUnavailable(f"{python} cannot import vbench{_tail(proc.stderr)}\n{SETUP_HELP}")


def _stage_videos(paths: dict[int, str], folder: str) -> dict[str, int]:
    """Links the videos into `folder` as v00000.mp4, ... (item index); returns file name -> item index.

    VBench's custom_input mode reads every .mp4 in a folder and takes the prompt from the file name, and
    dynamic_degree reads only names ending in .mp4, so keys (any characters) never become file names; the map
    brings results back. The container is probed from the content, so a .mkv linked as .mp4 still decodes.
    """
    os.makedirs(folder)
    names = {}
    try:
        for i, path in paths.items():
            name = f"v{i:05d}.mp4"
            _link(os.path.abspath(path), os.path.join(folder, name))
            names[name] = i
    except OSError as exc:
        raise _RunFailed(f"could not place the videos for VBench in {folder}: {exc}") from None
    return names


def _link(src: str, dst: str) -> None:
    """A symlink; a hard link or a copy where the filesystem allows no symlinks."""
    for make in (os.symlink, os.link, shutil.copy2):
        try:
            make(src, dst)
            return
        except OSError:
            if make is shutil.copy2:
                raise


def _read_results(path: str, dimensions: tuple[str, ...], names: dict[str, int]) -> dict[int, dict[str, float]]:
    """VBench's `{dimension: [mean, [{"video_path", "video_results", ...}, ...]]}` as item index -> dimension -> score.

    Videos are matched by file name (VBench reports the path it read); dynamic_degree's bool becomes 1.0 or 0.0.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise _RunFailed(f"VBench exited cleanly but wrote no results file {path}") from None
    except (OSError, ValueError) as exc:
        raise _RunFailed(f"VBench's results file {path} is not valid JSON: {exc}") from None
    scores = {i: {} for i in names.values()}
    try:
        for dim in dimensions:
            for record in data.get(dim, (None, ()))[1]:
                index = names.get(os.path.basename(record["video_path"]))
                if index is not None:
                    scores[index][dim] = _number(record["video_results"]) * PER_VIDEO_SCALE.get(dim, 1.0)
    except (AttributeError, IndexError, KeyError, TypeError) as exc:
        raise _RunFailed(f"VBench's results file {path} has an unexpected shape: {exc!r}") from None
    return scores


def _tail(stderr: str | bytes | None) -> str:
    """The last lines of the process's stderr, where VBench's traceback is (progress bars' \\r split too)."""
    if isinstance(stderr, bytes):  # what TimeoutExpired holds, whatever `text` was
        stderr = stderr.decode("utf-8", "replace")
    lines = [line for line in re.split(r"[\r\n]+", stderr or "") if line.strip()]
    if not lines:
        return "; it wrote nothing on stderr"
    return "; last lines of its stderr:\n" + "\n".join(lines[-STDERR_TAIL_LINES:])


def _number(value) -> float:
    if not isinstance(value, (bool, int, float)):
        raise TypeError(f"score {value!r} is not a number")
    return float(value)
