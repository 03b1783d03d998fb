"""The project's GPU figures in one bounded run that writes one JSON: Wan step time, NVDEC frame preparation,
native VBench scoring and TSCM on CUDA.

    bash benchmarks/gpu_check.sh [--out PATH] [--sections wan,nvdec,vbench,tscm] [--budget 420]  # one H100/H200
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json                           # CPU, tiny, seconds

`gpu_check.sh` first installs the wheels in `.whl/` (see its header: diffusers, PyAV and what they need, for a machine
that has only PyTorch and transformers), then runs this driver; the sections' measurements are in
`benchmarks/gpu_sections/` (one module each, and `common` for the device probes they share). The results go to
`--out` (default `$OUT/gpu_check.json`, else `./gpu_check.json`), rewritten after every section, so a run cut short
still leaves what it measured.

Sections, most important first (the default order; `--sections` picks and orders them):

- `wan`: one sampling step (CFG: 2 forward passes) of the Wan 2.1 T2V 14B transformer at 720p x 81 frames (latent
  16 x 21 x 90 x 160 -> 75,600 tokens at patch (1, 2, 2), 512 text tokens) with random bf16 weights built on the
  device from the `Wan-AI/Wan2.1-T2V-14B-Diffusers` transformer config (`benchmarks/bench_wan_step.py`), then the
  same for the Wan 2.2 I2V A14B expert (the same transformer with 36 input channels: 16 noisy + 4 mask + 16 image
  latents; each step runs one of its two experts). Per model: seconds per step, model FLOPs per forward (counted
  from the shapes), MFU against the card's bf16 matmul rate measured first (a large `torch.matmul`) and against the
  datasheet's dense bf16 peak where the card is recognised, peak memory, and seconds per video / GPU-hours for the
  set at the project's presets (T2V 50 steps x 80,000 videos, I2V 40 steps x 10,000). Also which of torch SDPA's
  kernels runs Wan's self-attention (the op torch dispatches to, from the profiler) and each kernel's time at that
  shape, and the attention backend diffusers is set to.
- `nvdec`: frame preparation for captioning (8 frames, 448x448 JPEG, `seek="keyframe"`) on the machine's cores
  (`decoder="pyav"`) against the same reader decoding on NVDEC (`decoder="nvdec"`), over 10 s 720p clips of the
  generated town with grain, H.264 at 3 Mbit/s and HEVC at 2 Mbit/s with 1 s GOPs (every sampled frame a keyframe
  decoded alone, as on 60 s clips with 2 s GOPs in BENCHMARKS.md's frame-preparation table). Clips/s with 1
  worker and with several, CPU milliseconds per clip, replica-equivalents (clips/s over the 3 requests/s one
  4xH100 InternVL3-78B replica is assumed to take), the cost of an open (the fixed part of a clip: open + 1 frame,
  less one frame's cost), an open that creates its own CUDA context (FFmpeg's default) against the shared primary
  context the reader uses, and how far the NVDEC frames are from the CPU's.
- `vbench`: native VBench scoring (`filtering.native.NativeScorer`) with the real architectures, random weights
  (DINO ViT-B/16, CLIP ViT-B/32 and ViT-L/14 vision towers built from their configs with transformers and loaded
  from a temporary folder through the scorer's own path): videos/s of the model work on the GPU over synthetic
  81-frame 720p frames already in memory (float32 as the scorer runs, and with TF32 matmuls), the CPU cost of the
  flicker sums, and videos/s end to end (PyAV decoding on worker threads) over generated Wan-like mp4s.
- `tscm`: `benchmarks/bench_tscm.py`'s measurement on CUDA with `--config big`: per-chunk latency and forward
  tokens/s against history length for TSCM, full context and a sliding window, the full/TSCM ratio, and training
  tokens/s.

Each section runs in its own process with a time limit (its cap, or what is left of `--budget`), so a crash, an
out-of-memory or a hang in one loses nothing of the others; a section also checks its own deadline between
measurements and records what it skipped. Sections import only the modules they use (not the packages' `__init__`),
so the machine needs neither pyarrow nor Prefect. `--dry-run` runs every section on the CPU with tiny configs in
seconds (tested in CI); its numbers check the code path, not the hardware.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

from gpu_sections.common import Part, cpu_cores, write_json

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("wan", "nvdec", "vbench", "tscm")
# seconds per section on a GPU (each also stops at what is left of --budget); a dry run gives each DRY_CAP_S
CAPS_S = {"wan": 230, "nvdec": 100, "vbench": 75, "tscm": 60}
DRY_CAP_S = 50
MIN_START_S = 15  # a section with less time than this left is skipped (recorded), not started


# ----------------------------------------------------------------------------------------------------------------
# the driver


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="results JSON (default $OUT/gpu_check.json, else ./gpu_check.json)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated, run in the order given (default {','.join(SECTIONS)})")
    ap.add_argument("--budget", type=float, help="seconds for the whole run (default 420; dry run 55)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny configs: checks the code path in seconds")
    ap.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section in this process
    ap.add_argument("--part", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--until", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.section:
        return run_section(args.section, args.part, args.until, args.dry_run)

    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown or not wanted:
        ap.error(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
    out = args.out or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else Path("gpu_check.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    budget = args.budget or (55.0 if args.dry_run else 420.0)
    started = time.time()
    deadline = started + budget
    results = {
        "schema": 1, "dry_run": args.dry_run, "budget_s": budget, "sections_run": wanted,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "environment": environment(), "sections": {},
    }
    write_json(out, results)
    print(f"gpu_check: {', '.join(wanted)}; budget {budget:.0f} s; results -> {out}", flush=True)
    for name in wanted:
        left = deadline - time.time()
        cap = min(DRY_CAP_S if args.dry_run else CAPS_S[name], left)
        if cap < (1 if args.dry_run else MIN_START_S):
            results["sections"][name] = {"ok": False, "error": f"skipped: {max(left, 0):.0f} s of the budget left"}
            write_json(out, results)
            continue
        print(f"\n== {name} (at most {cap:.0f} s)", flush=True)
        results["sections"][name] = run_child(name, cap, args.dry_run)
        if "device" in results["sections"][name]:
            results.setdefault("device", results["sections"][name]["device"])
        write_json(out, results)
    results["seconds"] = round(time.time() - started, 1)
    write_json(out, results)
    print("\n" + summary(results))
    print(f"\nwrote {out} in {results['seconds']:.0f} s")
    return 0 if all(s.get("ok") for s in results["sections"].values()) else 1


def run_child(name: str, cap: float, dry: bool) -> dict:
    """Run one section in a child process, at most `cap` seconds; its partial results survive a kill."""
    with tempfile.TemporaryDirectory(prefix=f"gpu_check_{name}_") as tmp:
        part = Path(tmp) / "part.json"
        until = time.time() + cap - 3  # the section's own deadline, a little inside the hard limit
        cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--part", str(part),
               "--until", f"{until:.3f}"] + (["--dry-run"] if dry else [])
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
        error = None
        try:
            rc = proc.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc, error = None, f"timed out after {cap:.0f} s (the section's limit); the figures here are what it got"
        except BaseException:  # interrupted: the section (in its own session) must not keep the GPU
            os.killpg(proc.pid, 9)
            raise
        seconds = round(time.time() - t0, 1)
        try:
            result = json.loads(part.read_text())
        except (OSError, ValueError):
            result = {}
    if rc not in (0, None) and not result.get("error"):
        error = f"exited with status {rc}" + (" (killed by a signal)" if rc < 0 else "")
    error = result.get("error") or error
    rest = {k: v for k, v in result.items() if k != "error"}
    return {"ok": error is None, "error": error, "seconds": seconds, **rest}


def run_section(name: str, part_path: Path, until: float, dry: bool) -> int:
    _lean_imports()
    part = Part(part_path)
    try:
        getattr(importlib.import_module(f"gpu_sections.{name}"), f"section_{name}")(part, until, dry)
    except BaseException as e:  # noqa: BLE001 - the section's error goes into the JSON, the others still run
        part["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"
        part["traceback"] = traceback.format_exc().splitlines()[-12:]
        part.save()
        traceback.print_exc()
        return 1
    part.save()
    return 0



def _lean_imports() -> None:
    """Import the project's modules without their packages' `__init__` (which re-export whole stages and pull in
    pyarrow, Prefect and HTTP clients): each section loads only the modules it measures."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    for package in ("yume_core", "captioning", "filtering", "training_stub"):
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = [str(ROOT / package)]
            sys.modules[package] = module


def environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", "transformers", "diffusers", "av", "numpy", "pillow", "safetensors", "webdataset"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpus": cpu_cores(),
           "versions": versions, "gpus": None}
    if shutil.which("nvidia-smi"):
        try:
            query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
            out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout
            env["gpus"] = [dict(zip(query.split(","), (v.strip() for v in line.split(","))))
                           for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    return env


# ----------------------------------------------------------------------------------------------------------------
# summary


def summary(results: dict) -> str:
    lines = [f"{'section':8s} {'ok':3s} {'s':>6s}  figures"]
    for name, s in results["sections"].items():
        figures = ""
        if name == "wan" and s.get("models"):
            figures = "; ".join(f"{k}: {m['step_s']} s/step, MFU {m['mfu_vs_measured_matmul']}" if "step_s" in m
                                else f"{k}: {m.get('skipped')}" for k, m in s["models"].items())
            if s.get("attention"):
                figures += f"; SDPA {s['attention'].get('default_backend')}"
        elif name == "nvdec" and s.get("sources"):
            parts = []
            for codec, row in s["sources"].items():
                cpu = row.get("cpu_all", {}).get("clips_per_s")
                nv = max((r.get("clips_per_s", 0) for r in row.get("nvdec", {}).values()), default=None)
                parts.append(f"{codec}: CPU {cpu} clips/s, NVDEC {nv if nv else '-'}")
            figures = "; ".join(parts)
        elif name == "vbench" and s.get("gpu_models"):
            figures = f"models {s['gpu_models']['float32']['videos_per_s']} videos/s (fp32)"
            if "videos_per_s" in s.get("end_to_end", {}):
                figures += f", end to end {s['end_to_end']['videos_per_s']} videos/s"
        elif name == "tscm" and "full_over_tscm" in s:
            figures = f"full/TSCM {s['full_over_tscm']}"
        if s.get("error"):
            figures = (figures + "; " if figures else "") + f"error: {s['error'][:160]}"
        lines.append(f"{name:8s} {'yes' if s.get('ok') else 'no':3s} {s.get('seconds', 0):6.1f}  {figures}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
