"""The project's GPU figures in one bounded run that writes one JSON: Wan step time, NVDEC frame preparation,
native VBench scoring and TSCM on CUDA.

    bash benchmarks/gpu_check.sh [--out PATH] [--sections wan,nvdec,vbench,tscm] [--budget 420]  # one H100/H200
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json                           # CPU, tiny, seconds

`gpu_check.sh` first installs the wheels in `.whl/` (see its header: diffusers, PyAV and what they need, for a machine
that has only PyTorch and transformers), then runs this driver. The results go to
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("wan", "nvdec", "vbench", "tscm")
# seconds per section on a GPU (each also stops at what is left of --budget); a dry run gives each DRY_CAP_S
CAPS_S = {"wan": 230, "nvdec": 100, "vbench": 75, "tscm": 60}
DRY_CAP_S = 50
MIN_START_S = 15  # a section with less time than this left is skipped (recorded), not started
REPLICA_RPS = 3.0  # requests/s of one 4xH100 InternVL3-78B replica, as assumed in BENCHMARKS.md (frame preparation)

# Dense bf16 tensor-core peaks from NVIDIA's datasheets (the sparse figures halved), by name as torch reports it.
DATASHEET_BF16_TFLOPS = (
    ("H200 NVL", 835.0), ("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0),
    ("A100", 312.0),
)


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
    _write_json(out, results)
    print(f"gpu_check: {', '.join(wanted)}; budget {budget:.0f} s; results -> {out}", flush=True)
    for name in wanted:
        left = deadline - time.time()
        cap = min(DRY_CAP_S if args.dry_run else CAPS_S[name], left)
        if cap < (1 if args.dry_run else MIN_START_S):
            results["sections"][name] = {"ok": False, "error": f"skipped: {max(left, 0):.0f} s of the budget left"}
            _write_json(out, results)
            continue
        print(f"\n== {name} (at most {cap:.0f} s)", flush=True)
        results["sections"][name] = run_child(name, cap, args.dry_run)
        if "device" in results["sections"][name]:
            results.setdefault("device", results["sections"][name]["device"])
        _write_json(out, results)
    results["seconds"] = round(time.time() - started, 1)
    _write_json(out, results)
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
        {"wan": section_wan, "nvdec": section_nvdec, "vbench": section_vbench, "tscm": section_tscm}[name](
            part, until, dry)
    except BaseException as e:  # noqa: BLE001 - the section's error goes into the JSON, the others still run
        part["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"
        part["traceback"] = traceback.format_exc().splitlines()[-12:]
        part.save()
        traceback.print_exc()
        return 1
    part.save()
    return 0


class Part(dict):
    """A section's results, written atomically after every measurement."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def save(self) -> None:
        _write_json(self.path, self)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


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
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpus": _cores(),
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


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _left(until: float) -> float:
    return until - time.time()


def _sig(x: float, digits: int = 4) -> float:
    """`x` to `digits` significant digits (tiny dry-run figures keep theirs)."""
    return float(f"{x:.{digits}g}")


# ----------------------------------------------------------------------------------------------------------------
# shared measurements


def _torch_device(dry: bool):
    import torch

    if dry:
        torch.set_num_threads(1)  # tiny models: more threads only add contention on a shared machine
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible to torch (torch.cuda.is_available() is False); run with "
                           "--dry-run on a machine without a GPU")
    return torch.device("cuda")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_info(device) -> dict:
    import torch

    info = {"type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                    multiprocessors=p.multi_processor_count, cudnn=torch.backends.cudnn.version())
    else:
        info.update(name=platform.processor() or "cpu", threads=torch.get_num_threads())
    return info


def datasheet_peak(name: str) -> dict | None:
    for key, tflops in DATASHEET_BF16_TFLOPS:
        if key in name:
            return {"tflops": tflops, "card": key, "source": "NVIDIA datasheet, dense bf16 (sparse figure halved)"}
    return None


def matmul_rate(device, dtype, n: int, min_seconds: float) -> dict:
    """The card's achievable matmul rate: best of 3 timed runs of an n x n x n `torch.matmul`."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    _sync(device)
    t0 = time.perf_counter()
    iters = 0
    while time.perf_counter() - t0 < min_seconds / 4:  # calibrate the count to ~min_seconds/4 per run
        torch.matmul(a, b)
        _sync(device)
        iters += 1
    best = float("inf")
    for _ in range(3):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            torch.matmul(a, b)
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / iters)
    return {"tflops": _sig(2 * n**3 / best / 1e12), "n": n, "dtype": str(dtype).replace("torch.", ""),
            "iterations": iters}


SDPA_OPS = {  # aten op -> SDPA backend
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


def attention_probe(device, dtype, shape: tuple[int, int, int, int], repeats: int) -> dict:
    """Which SDPA kernel torch picks for (batch, heads, tokens, head_dim) and what each kernel costs there."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype) for _ in range(3))
    b, h, n, d = shape
    flops = 4 * b * h * n * n * d
    result: dict = {"shape": list(shape), "dtype": str(dtype).replace("torch.", "")}
    if device.type == "cuda":
        result["enabled"] = {"flash": torch.backends.cuda.flash_sdp_enabled(),
                             "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                             "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                             "math": torch.backends.cuda.math_sdp_enabled()}
    with torch.inference_mode():
        F.scaled_dot_product_attention(q, k, v)
        _sync(device)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            F.scaled_dot_product_attention(q, k, v)
            _sync(device)
        ops = sorted({e.key for e in prof.key_averages() if e.key in SDPA_OPS})
        result["default_op"] = ops
        result["default_backend"] = ", ".join(SDPA_OPS[o] for o in ops) or "unknown"

        def best(fn) -> float:
            fn()
            _sync(device)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                _sync(device)
                times.append(time.perf_counter() - t0)
            return min(times)

        timings = {"default": best(lambda: F.scaled_dot_product_attention(q, k, v))}
        kernels = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                   "efficient": SDPBackend.EFFICIENT_ATTENTION}
        if device.type == "cpu":
            kernels["math"] = SDPBackend.MATH
        errors = {}
        for name, backend in kernels.items():
            try:
                with sdpa_kernel([backend]):
                    timings[name] = best(lambda: F.scaled_dot_product_attention(q, k, v))
            except RuntimeError as e:
                errors[name] = " ".join(str(e).split())[:200]
    result["ms"] = {k: _sig(1000 * t) for k, t in timings.items()}
    result["tflops"] = {k: _sig(flops / t / 1e12) for k, t in timings.items()}
    result["unavailable"] = errors
    return result


# ----------------------------------------------------------------------------------------------------------------
# wan


def wan_forward_flops(config: dict, latent: tuple, text_len: int) -> dict:
    """Model FLOPs of one WanTransformer3DModel forward (multiply-add = 2), from the shapes: every matmul, the
    patch embedding and the attention products, the timestep embedding included (negligible at 14B, but it is what
    makes the count exact, so a test can hold it to torch's FLOP counter without a tolerance)."""
    c, t, h, w = latent
    pt, ph, pw = config["patch_size"]
    d = config["num_attention_heads"] * config["attention_head_dim"]
    n = (t // pt) * (h // ph) * (w // pw)
    self_proj = 4 * 2 * n * d * d
    self_attn = 4 * n * n * d
    cross = 2 * 2 * n * d * d + 2 * 2 * text_len * d * d + 4 * n * text_len * d
    ffn = 2 * 2 * n * d * config["ffn_dim"]
    layers = config["num_layers"] * (self_proj + self_attn + cross + ffn)
    ends = 2 * n * d * c * pt * ph * pw + 2 * n * d * config["out_channels"] * pt * ph * pw
    text = 2 * text_len * (config["text_dim"] * d + d * d)
    timestep = 2 * (config["freq_dim"] * d + d * d + d * 6 * d)  # sinusoid -> d -> d, then the 6 modulations
    total = layers + ends + text + timestep
    return {"total": total, "attention_share": config["num_layers"] * self_attn / total, "tokens": n}


def _preset_steps(name: str, default: int) -> int:
    """Sampling steps of a synthesis preset (synthesis/presets/NAME.yaml), so the projection follows the presets."""
    try:
        import yaml

        return int(yaml.safe_load((ROOT / "synthesis" / "presets" / f"{name}.yaml").read_text())["steps"])
    except (OSError, KeyError, TypeError, ValueError, ImportError):
        return default


def section_wan(part: Part, until: float, dry: bool) -> None:
    import gc

    import torch

    import bench_wan_step as bench

    device = _torch_device(dry)
    dtype = torch.float32 if dry else torch.bfloat16
    part["device"] = device_info(device)
    part.save()
    import diffusers

    part["diffusers"] = diffusers.__version__
    try:
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        part["diffusers_attention_backend"] = str(_AttentionBackendRegistry.get_active_backend()[0].value)
    except (ImportError, AttributeError):
        part["diffusers_attention_backend"] = os.environ.get("DIFFUSERS_ATTN_BACKEND", "native")
    part["matmul"] = matmul_rate(device, dtype, 256 if dry else 8192, 0.05 if dry else 1.0)
    peak = None if dry else datasheet_peak(part["device"]["name"])
    part["datasheet_peak"] = peak
    part.save()
    print(f"matmul {part['matmul']['tflops']:.3g} TFLOP/s ({part['matmul']['dtype']}); datasheet peak: "
          f"{peak['tflops'] if peak else 'card not recognised'}", flush=True)

    base, latent, text_len = (bench.TINY, bench.LATENT_TINY, 16) if dry else (bench.WAN21_14B, bench.LATENT_720P, 512)
    heads = base["num_attention_heads"]
    tokens = latent[1] * (latent[2] // 2) * (latent[3] // 2)
    part["attention"] = attention_probe(device, dtype, (1, heads, tokens, base["attention_head_dim"]),
                                        repeats=2 if dry else 3)
    part.save()
    print(f"SDPA at Wan's self-attention shape: {part['attention']['default_backend']}; ms {part['attention']['ms']}",
          flush=True)

    models = [
        ("wan21_t2v_14b", base, latent, _preset_steps("wan21-t2v-720p", 50), 80_000),
        ("wan22_i2v_a14b_expert", {**base, "in_channels": 36}, (36, *latent[1:]), _preset_steps("wan22-i2v-720p", 40),
         10_000),
    ]
    steps_timed = 1 if dry else 2
    part["models"] = {}
    last_cost = None
    for key, config, shape, steps, videos in models:
        if last_cost is not None and _left(until) < 1.2 * last_cost:
            part["models"][key] = {"skipped": f"{_left(until):.0f} s left, the previous model took {last_cost:.0f} s"}
            part.save()
            continue
        t0 = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model = bench.build(config, str(device), dtype)
        params = sum(p.numel() for p in model.parameters())
        build_s = time.perf_counter() - t0
        latents, cond, uncond = bench.inputs(shape, config["text_dim"], text_len, str(device), dtype)
        forwards = bench.time_forwards(model, latents, (cond, uncond), str(device), repeats=2 * steps_timed, warmup=1)
        step_s = sum(forwards) / steps_timed  # cond + uncond of each step
        flops = wan_forward_flops(config, shape, text_len)
        achieved = flops["total"] / (step_s / 2) / 1e12
        row = {
            "parameters": params, "latent": list(shape), "tokens": flops["tokens"], "text_tokens": text_len,
            "dtype": str(dtype).replace("torch.", ""), "build_s": _sig(build_s),
            "forward_s": [_sig(f) for f in forwards], "step_s": _sig(step_s),
            "model_tflop_per_forward": _sig(flops["total"] / 1e12),
            "attention_share_of_flops": _sig(flops["attention_share"], 3),
            "achieved_tflops": _sig(achieved),
            "mfu_vs_measured_matmul": _sig(achieved / part["matmul"]["tflops"], 3),
            "mfu_vs_datasheet_peak": _sig(achieved / peak["tflops"], 3) if peak else None,
            "peak_memory_gib": _sig(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda"
            else None,
            "steps_per_video": steps, "seconds_per_video": _sig(steps * step_s),
            "videos": videos, "gpu_hours": _sig(videos * steps * step_s / 3600),
            "note": "transformer only; text encoding and VAE decoding are not timed",
        }
        part["models"][key] = row
        part.save()
        print(f"{key}: {params / 1e9:.2f} B params, {row['step_s']:.3f} s per step (2 forwards), MFU "
              f"{row['mfu_vs_measured_matmul']:.2f} of measured matmul"
              + (f", {row['mfu_vs_datasheet_peak']:.2f} of datasheet peak" if peak else ""), flush=True)
        del model, latents, cond, uncond
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        last_cost = time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------------------------
# nvdec


BITRATES_KBPS = {"libx264": 3000, "libx265": 2000}  # as benchmarks/bench_frames.py: web-like rates


def render_walk(work: Path, size: tuple[int, int], fps: int = 30) -> list:
    """2 s of a walk through the generated town (`yume_core.sample_data`, as bench_frames.py's sources). The town
    renders ~8 frames/s at 720p on one core, too slow to render whole clips within a bounded run."""
    from yume_core.media import iter_frames
    from yume_core.sample_data import make_sekai_sample

    sample = make_sekai_sample(work / "render", n_clips=1, n_frames=2 * fps, size=size, seed=7)
    return list(iter_frames(sample.video_path(sample.clip_ids[0])))


def walk_loop(rendered: list) -> list:
    """The rendered walk forth and back (no cut: the encoder places keyframes as on one walk), each frame with its
    own light sensor grain (sigma 3, as bench_frames.py), so the encoder has to spend its bitrate."""
    import numpy as np

    rng = np.random.default_rng(0)
    return [np.clip(f.astype(np.int16) + rng.normal(0, 3, f.shape[:2] + (1,)).astype(np.int16), 0, 255)
            .astype(np.uint8) for f in rendered + rendered[-2:0:-1]]


def encode_walk(path: Path, codec: str, loop: list, seconds: float, keyint: int, fps: int = 30) -> None:
    from yume_core.media import write_video

    params = f"bitrate={BITRATES_KBPS[codec]}:keyint={keyint}"  # ABR, keyint only: as bench_frames.py
    frames = (loop[t % len(loop)] for t in range(int(seconds * fps)))
    write_video(path, frames, fps, codec=codec, preset="medium", options={f"{codec[3:]}-params": params})


def _keyframes(path: Path) -> list[int]:
    import bench_frames

    return bench_frames.keyframe_positions(path)


def _rate(path: Path, clips: int, config) -> dict:
    """clips/s and CPU ms per clip of `iter_prepared` over `clips` items of one file (best of 2)."""
    from captioning.frames import iter_prepared

    best = (float("inf"), float("inf"))
    for _ in range(2):
        w0, c0 = time.perf_counter(), time.process_time()
        done = sum(1 for _, r in iter_prepared(((i, path, 0, None) for i in range(clips)), config)
                   if not isinstance(r, Exception))
        if done != clips:
            raise RuntimeError(f"{clips - done} of {clips} clips failed with {config}")
        best = min(best, (time.perf_counter() - w0, time.process_time() - c0))
    wall, cpu = best
    return {"workers": config.resolved_workers, "clips": clips, "clips_per_s": round(clips / wall, 2),
            "clips_per_s_per_worker": round(clips / wall / config.resolved_workers, 2),
            "cpu_ms_per_clip": round(1000 * cpu / clips, 1),
            "replica_equivalents": round(clips / wall / REPLICA_RPS, 2)}


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _open_cost(path: Path, config, repeats: int) -> dict:
    """Fixed cost of a clip (open, index, one frame) and the cost of each further frame, from 1- and 8-frame runs."""
    import dataclasses

    from captioning.frames import prepare_frames

    one = dataclasses.replace(config, num_frames=1)
    eight = dataclasses.replace(config, num_frames=8)
    prepare_frames(path, one), prepare_frames(path, eight)  # warm
    t1 = _median_s(lambda: prepare_frames(path, one), repeats)
    t8 = _median_s(lambda: prepare_frames(path, eight), repeats)
    per_frame = max(t8 - t1, 0.0) / 7
    return {"one_frame_ms": round(1000 * t1, 2), "eight_frames_ms": round(1000 * t8, 2),
            "per_frame_ms": round(1000 * per_frame, 2), "per_open_ms": round(1000 * (t1 - per_frame), 2)}


def _context_cost(path: Path, repeats: int) -> dict:
    """An open plus the first decoded frame on NVDEC: with the shared primary context (the reader's) and with a
    context created per open (FFmpeg's default)."""
    import av
    from av.codec.hwaccel import HWAccel

    def first_frame(options):
        with av.open(str(path), hwaccel=HWAccel("cuda", allow_software_fallback=False, options=options)) as c:
            next(iter(c.decode(video=0)))

    out = {}
    for name, options in (("primary_context_ms", {"primary_ctx": "1"}), ("own_context_ms", {})):
        first_frame(options)
        out[name] = round(1000 * _median_s(lambda: first_frame(options), repeats), 2)
    return out


def _agreement(path: Path) -> dict:
    """NVDEC's frames against the CPU's exact ones (full decode, deblocking on): same indices, mean |diff|."""
    import io

    import numpy as np
    from PIL import Image

    from captioning.frames import FrameConfig, prepare_frames

    cpu = prepare_frames(path, FrameConfig(fast_decode=False, jpeg_quality=95))
    gpu = prepare_frames(path, FrameConfig(decoder="nvdec", jpeg_quality=95))

    def px(jpeg: bytes):
        return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float64)

    diffs = [float(np.abs(px(a) - px(b)).mean()) for a, b in zip(cpu.jpegs, gpu.jpegs)]
    return {"same_indices": cpu.indices.tolist() == gpu.indices.tolist(), "mean_abs_diff_max": round(max(diffs), 3)}


def section_nvdec(part: Part, until: float, dry: bool) -> None:
    import ctypes.util

    import av

    from captioning import frames as fr
    from yume_core.config import ConfigError
    from yume_core.media import probe_video

    try:
        from av.codec.hwaccel import hwdevices_available

        devices = hwdevices_available()
    except ImportError:
        devices = None
    part["pyav"] = av.__version__
    part["ffmpeg_hw_devices"] = devices
    part["driver_libraries"] = {"libcuda": ctypes.util.find_library("cuda"),
                                "libnvcuvid": ctypes.util.find_library("nvcuvid")}
    part["NVIDIA_DRIVER_CAPABILITIES"] = os.environ.get("NVIDIA_DRIVER_CAPABILITIES")
    try:
        fr.check_decoder(fr.FrameConfig(decoder="nvdec"))
        part["nvdec"] = {"available": True}
    except ConfigError as e:
        part["nvdec"] = {"available": False, "error": str(e)}
    part.save()
    print(f"NVDEC: {'available' if part['nvdec']['available'] else part['nvdec']['error']}", flush=True)

    cores = _cores()
    # 10 s with a keyframe every second: each of the 8 bins (1.25 s) holds a keyframe, so every sampled frame is a
    # keyframe decoded alone, as on 60 s clips with 2 s GOPs (BENCHMARKS.md); a 60 s clip's longer packet index
    # costs ~4 ms more per open on the CPU
    seconds, size, keyint = (2, (128, 72), 30) if dry else (10, (1280, 720), 30)
    clips_one, clips_all, repeats = (2, 4, 2) if dry else (12, 4 * cores, 5)
    part["setup"] = {"cores": cores, "clip_seconds": seconds, "size": list(size), "keyint": keyint,
                     "frames_per_clip": 8, "jpeg_size": 448, "seek": "keyframe", "replica_rps": REPLICA_RPS,
                     "source": "generated town walk with grain, H.264 3 Mbit/s and HEVC 2 Mbit/s, preset medium"}
    work = Path(tempfile.mkdtemp(prefix="gpu_check_clips_"))
    part["sources"] = {}
    try:
        t0 = time.perf_counter()
        loop = walk_loop(render_walk(work, size))
        # HEVC first: Sekai's clips are HEVC
        paths = {codec: work / f"walk_{codec[3:]}.mp4" for codec in ("libx265", "libx264")}
        with ThreadPoolExecutor(2) as pool:  # the encoders release the GIL
            list(pool.map(lambda c: encode_walk(paths[c], c, loop, seconds, keyint), paths))
        del loop
        part["setup"]["sources_made_s"] = round(time.perf_counter() - t0, 1)
        for codec, path in paths.items():
            if _left(until) < (2 if dry else 15):
                part["sources"][codec] = {"skipped": "time budget"}
                continue
            info = probe_video(path)
            keys = _keyframes(path)
            row: dict = {"frames": info.frames, "mbit_s": round(info.bytes * 8 / info.duration_s / 1e6, 2),
                         "keyframes": len(keys),
                         "sampled_keyframes": sum(i in set(keys) for i in fr.prepare_frames(path).indices.tolist())}
            part["sources"][codec] = row
            row["cpu_1"] = _rate(path, clips_one, fr.FrameConfig(workers=1))
            row["cpu_all"] = _rate(path, clips_all, fr.FrameConfig(workers=cores))
            row["cpu_open"] = _open_cost(path, fr.FrameConfig(workers=1), repeats)
            part.save()
            print(f"{codec} CPU: {row['cpu_1']['clips_per_s']} clips/s on 1 core, {row['cpu_all']['clips_per_s']} "
                  f"on {cores}", flush=True)
            if not part["nvdec"]["available"]:
                continue
            row["nvdec"] = {}
            try:
                for workers in sorted({1, 4, min(8, cores), cores}):
                    if _left(until) < 10:
                        row["nvdec"][str(workers)] = {"skipped": "time budget"}
                        continue
                    n = clips_one if workers == 1 else max(clips_all, 4 * workers)
                    row["nvdec"][str(workers)] = _rate(path, n, fr.FrameConfig(decoder="nvdec", workers=workers))
                    part.save()
                row["nvdec_open"] = _open_cost(path, fr.FrameConfig(decoder="nvdec", workers=1), repeats)
                row["nvdec_context"] = _context_cost(path, repeats)
                row["nvdec_vs_cpu_frames"] = _agreement(path)
            except Exception as e:  # noqa: BLE001 - recorded; the other codec is still measured
                row["nvdec_error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                print(f"{codec} NVDEC failed: {row['nvdec_error']}", flush=True)
            part.save()
            rates = [r for r in row["nvdec"].values() if "clips_per_s" in r]
            if rates:
                best = max(rates, key=lambda r: r["clips_per_s"])
                print(f"{codec} NVDEC: best {best['clips_per_s']} clips/s with {best['workers']} workers "
                      f"({best['cpu_ms_per_clip']} ms CPU per clip)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = [f"{c}: {r['nvdec_error']}" for c, r in part["sources"].items() if "nvdec_error" in r]
    if not dry and not part["nvdec"]["available"]:
        part["error"] = "NVDEC unavailable (CPU figures recorded): " + part["nvdec"]["error"]
    elif failed:
        part["error"] = "NVDEC failed: " + "; ".join(failed)


# ----------------------------------------------------------------------------------------------------------------
# vbench


def vbench_configs(dry: bool) -> dict:
    """DINO ViT-B/16 and the CLIP ViT-B/32 and ViT-L/14 vision towers, as their checkpoints' configs give them."""
    from transformers import CLIPVisionConfig, ViTConfig

    if dry:
        return {
            "dino": ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              image_size=32, patch_size=16, qkv_bias=True),
            "clip_b32": CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=32, patch_size=16, projection_dim=16),
            "clip_l14": CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=32, patch_size=16, projection_dim=24),
        }
    return {  # facebook/dino-vitb16, openai/clip-vit-base-patch32, openai/clip-vit-large-patch14
        "dino": ViTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                          image_size=224, patch_size=16, qkv_bias=True),
        "clip_b32": CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                     num_attention_heads=12, image_size=224, patch_size=32, projection_dim=512,
                                     hidden_act="quick_gelu"),
        "clip_l14": CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                     num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768,
                                     hidden_act="quick_gelu"),
    }


def _save_random_models(folder: Path, dry: bool) -> dict:
    """Random-weight checkpoints of the three architectures (and a LAION-shaped head), as local model paths."""
    import torch
    from transformers import CLIPVisionModelWithProjection, ViTModel
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except (ImportError, AttributeError):
        pass
    torch.manual_seed(0)
    configs = vbench_configs(dry)
    paths = {}
    for key, config in configs.items():
        model = (ViTModel(config, add_pooling_layer=False) if key == "dino"
                 else CLIPVisionModelWithProjection(config))
        paths[key] = folder / key
        model.half().save_pretrained(paths[key])  # the scorer loads float32; half a file to write and read
        paths[f"{key}_parameters"] = sum(p.numel() for p in model.parameters())
    head = {"weight": torch.randn(1, configs["clip_l14"].projection_dim) * 0.01, "bias": torch.zeros(1)}
    paths["head"] = folder / "aesthetic_head.pth"
    torch.save(head, paths["head"])
    return paths


def _score_in_memory(scorer, frames) -> dict:
    """One video's scores from frames already in memory: `NativeScorer._measure` without the decoding."""
    import torch

    from filtering import native

    video = native._Video(set(scorer._encoders), "temporal_flickering" in scorer.dimensions)
    with torch.inference_mode():
        for start in range(0, len(frames), scorer.frame_batch):
            chunk = frames[start:start + scorer.frame_batch]
            video.add_frames(chunk)
            on_device = torch.from_numpy(chunk).to(scorer._device)
            video.add_features(native._encode(scorer._encoders, on_device), len(chunk))
    return {dim: scorer._reduce(dim, video) for dim in scorer.dimensions}


def _model_rate(scorer, frames, videos: int, device) -> dict:
    """videos/s of the model work alone (transfer, VBench's transforms and the three ViTs) on frames in memory."""
    import torch

    from filtering import native

    models = {dim: enc for dim, enc in scorer._encoders.items()}

    def one():
        with torch.inference_mode():
            for start in range(0, len(frames), scorer.frame_batch):
                native._encode(models, torch.from_numpy(frames[start:start + scorer.frame_batch]).to(device))
        _sync(device)

    one()
    t0 = time.perf_counter()
    for _ in range(videos):
        one()
    wall = time.perf_counter() - t0
    return {"videos": videos, "videos_per_s": _sig(videos / wall), "frames_per_s": _sig(videos * len(frames) / wall)}


def section_vbench(part: Part, until: float, dry: bool) -> None:
    import numpy as np
    import torch

    from filtering.native import NativeScorer

    device = _torch_device(dry)
    part["device"] = device_info(device)
    frames_n, (w, h) = (9, (64, 36)) if dry else (81, (1280, 720))
    videos = 2 if dry else 8
    part["setup"] = {"frames_per_video": frames_n, "size": [w, h], "frame_batch": 64,
                     "models": "random weights: DINO ViT-B/16, CLIP ViT-B/32, CLIP ViT-L/14 (vision towers)"}
    with tempfile.TemporaryDirectory(prefix="gpu_check_vbench_") as tmp:
        t0 = time.perf_counter()
        paths = _save_random_models(Path(tmp), dry)
        part["setup"]["parameters"] = {k[:-11]: v for k, v in paths.items() if k.endswith("_parameters")}
        part["setup"]["models_built_s"] = round(time.perf_counter() - t0, 1)
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (h // 8, 2 * w // 8, 3), np.uint8).repeat(8, 0).repeat(8, 1)
        frames = np.stack([base[:, (4 * t) % (base.shape[1] - w):][:, :w] for t in range(frames_n)])
        workers = 4 if dry else min(16, _cores())
        with NativeScorer(dino_model=str(paths["dino"]), clip_model=str(paths["clip_b32"]),
                          aesthetic_model=str(paths["clip_l14"]), aesthetic_head=str(paths["head"]),
                          device=str(device), workers=workers) as scorer:
            part["setup"]["models_loaded_s"] = round(time.perf_counter() - t0, 1)
            scores = _score_in_memory(scorer, frames)
            if not all(np.isfinite(v) for v in scores.values()):
                raise RuntimeError(f"non-finite scores from the in-memory path: {scores}")
            t1 = time.process_time()
            _score_in_memory(scorer, frames)
            part["cpu_s_per_video_in_memory"] = _sig(time.process_time() - t1, 3)  # flicker sums, launches
            precision = torch.get_float32_matmul_precision()
            part["gpu_models"] = {"float32": _model_rate(scorer, frames, videos, device)}
            part.save()
            print(f"models on {device.type}, float32: {part['gpu_models']['float32']['videos_per_s']} videos/s",
                  flush=True)
            if device.type == "cuda" and _left(until) > 15:
                torch.set_float32_matmul_precision("high")
                try:
                    part["gpu_models"]["tf32"] = _model_rate(scorer, frames, videos, device)
                finally:
                    torch.set_float32_matmul_precision(precision)
                part.save()
            if _left(until) < (3 if dry else 30):
                part["end_to_end"] = {"skipped": "time budget"}
                return
            import bench_scoring

            t2 = time.perf_counter()
            sources = bench_scoring.make_sources(Path(tmp) / "videos", 2 if dry else 4, frames_n, (w, h))
            items = [(f"v{i}", sources[i % len(sources)][1]) for i in range(4 if dry else 2 * workers)]
            encode_s = time.perf_counter() - t2
            scorer.score(items[:1])
            t3 = time.perf_counter()
            results = scorer.score(items)
            wall = time.perf_counter() - t3
            bad = [r.error for r in results if not r.ok]
            if bad:
                raise RuntimeError(f"{len(bad)} videos failed to score: {bad[0]}")
            part["end_to_end"] = {"workers": workers, "videos": len(items), "videos_per_s": _sig(len(items) / wall),
                                  "sources_encoded_s": round(encode_s, 1),
                                  "note": "PyAV decoding on worker threads, then the same model work"}
            part.save()
            print(f"end to end ({workers} workers): {part['end_to_end']['videos_per_s']} videos/s", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# tscm

DRY_TSCM = {"batch_size": 2, "data": {"max_history_chunks": 2}, "model": {"width": 32, "depth": 1, "heads": 2}}


def section_tscm(part: Part, until: float, dry: bool) -> None:
    import torch

    import bench_tscm as bench

    device = _torch_device(dry)
    part["device"] = device_info(device)
    preset = "cpu" if dry else "big"
    history = [1, 2] if dry else [8, 16, 32, 64]
    repeats, max_tokens, train_steps = (1, 200_000, 1) if dry else (5, 200_000, 5)
    # a dry run shrinks the cpu preset further: it checks the code path, in seconds on two busy cores
    config = bench.load_config(preset, DRY_TSCM if dry else None)
    model = bench.build_model(config, bench.TEXT_DIM).to(device).eval()

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    space = config.data.latents
    part["setup"] = {"config": preset, "latent_size": list(space.latent_size), "channels": space.channels,
                     "chunk_latents": config.data.chunk_latents, "width": config.model.width,
                     "depth": config.model.depth, "sample_steps": config.sample_steps, "repeats": repeats,
                     "command": f"python benchmarks/bench_tscm.py --device {device.type} --config {preset}"}
    rows = part["rows"] = []
    for hc in history:
        for mode in ("tscm", "full", "sliding"):
            n_hist = 1 + hc * config.data.chunk_latents
            counts = bench.token_counts(n_hist, space.latent_size, bench.with_mode(config, mode).model.tscm,
                                        config.model.patch)
            if counts["temporal_spatial"] > max_tokens:
                rows.append({"mode": mode, "history_chunks": hc, "skipped": f"{counts['temporal_spatial']} tokens"})
            elif _left(until) < (1 if dry else 8):
                rows.append({"mode": mode, "history_chunks": hc, "skipped": "time budget"})
            else:
                try:
                    rows.append(bench.time_chunk(model, config, mode, hc, device, repeats, autocast))
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    rows.append({"mode": mode, "history_chunks": hc, "skipped": "out of memory"})
            part.save()
    by = {(r["mode"], r["history_chunks"]): r for r in rows if "skipped" not in r}
    part["full_over_tscm"] = {str(hc): _sig(by[("full", hc)]["chunk_ms"] / by[("tscm", hc)]["chunk_ms"], 3)
                              for hc in history if ("full", hc) in by and ("tscm", hc) in by}
    tscm = [by[("tscm", hc)]["chunk_ms"] for hc in history if ("tscm", hc) in by]
    part["tscm_chunk_ms_max_over_min"] = round(max(tscm) / min(tscm), 3) if len(tscm) > 1 else None
    part.save()
    print(f"full/TSCM per-chunk latency: {part['full_over_tscm']}", flush=True)
    del model
    if _left(until) > (2 if dry else 20):
        part["training"] = bench.time_training(config, device, train_steps)
        part.save()


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
