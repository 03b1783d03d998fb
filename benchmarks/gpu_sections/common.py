"""What the sections share: the device, its measured matmul rate and attention kernels, the datasheet peaks,
the results file each section writes (`Part`) and the deadline helpers."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Dense bf16 tensor-core peaks from NVIDIA's datasheets (the sparse figures halved), by name as torch reports it.
DATASHEET_BF16_TFLOPS = (
    ("H200 NVL", 835.0), ("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0),
    ("A100", 312.0),
)


class Part(dict):
    """A section's results, written atomically after every measurement."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def save(self) -> None:
        write_json(self.path, self)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def seconds_left(until: float) -> float:
    return until - time.time()


def sig(x: float, digits: int = 4) -> float:
    """`x` to `digits` significant digits (tiny dry-run figures keep theirs)."""
    return float(f"{x:.{digits}g}")




def torch_device(dry: bool):
    import torch

    if dry:
        torch.set_num_threads(1)  # tiny models: more threads only add contention on a shared machine
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible to torch (torch.cuda.is_available() is False); run with "
                           "--dry-run on a machine without a GPU")
    return torch.device("cuda")


def sync(device) -> None:
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
    sync(device)
    t0 = time.perf_counter()
    iters = 0
    while time.perf_counter() - t0 < min_seconds / 4:  # calibrate the count to ~min_seconds/4 per run
        torch.matmul(a, b)
        sync(device)
        iters += 1
    best = float("inf")
    for _ in range(3):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            torch.matmul(a, b)
        sync(device)
        best = min(best, (time.perf_counter() - t0) / iters)
    return {"tflops": sig(2 * n**3 / best / 1e12), "n": n, "dtype": str(dtype).replace("torch.", ""),
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
        sync(device)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            F.scaled_dot_product_attention(q, k, v)
            sync(device)
        ops = sorted({e.key for e in prof.key_averages() if e.key in SDPA_OPS})
        result["default_op"] = ops
        result["default_backend"] = ", ".join(SDPA_OPS[o] for o in ops) or "unknown"

        def best(fn) -> float:
            fn()
            sync(device)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                sync(device)
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
    result["ms"] = {k: sig(1000 * t) for k, t in timings.items()}
    result["tflops"] = {k: sig(flops / t / 1e12) for k, t in timings.items()}
    result["unavailable"] = errors
    return result


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
