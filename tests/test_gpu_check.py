"""benchmarks/gpu_check.sh: the GPU figures' one prepared run, exercised on the CPU by its dry run.

The dry run is the same driver, section processes and measurements with tiny configs; these tests check that it
writes every section with numbers within a minute, that one section's failure or hang loses none of the others, and
that the FLOP count behind the MFU figures matches what the model actually computes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _section(name: str):
    """A module of `benchmarks/gpu_sections` (`common` or a section), imported as the driver's children import it."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module(f"gpu_sections.{name}")


def _run(out: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out), *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "x.json"
    started = time.perf_counter()
    proc = _run(out)
    return proc, json.loads(out.read_text()), time.perf_counter() - started


def test_dry_run_writes_every_section_with_numbers_within_a_minute(dry_run):
    proc, results, seconds = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert seconds < 60
    assert results["dry_run"] is True and results["seconds"] < 60
    assert set(results["sections"]) == {"wan", "nvdec", "vbench", "tscm"}
    assert list(results["sections"]) == ["wan", "nvdec", "vbench", "tscm"]  # the default order: importance
    for name, section in results["sections"].items():
        assert section["ok"] is True and section["error"] is None, (name, section.get("error"))
        assert _positive(section["seconds"])
    assert results["environment"]["versions"]["torch"]


def test_wan_section_gives_step_time_mfu_and_the_attention_kernel(dry_run):
    wan = dry_run[1]["sections"]["wan"]
    assert _positive(wan["matmul"]["tflops"])
    assert wan["attention"]["default_backend"] != "unknown" and wan["attention"]["ms"]["default"] > 0
    assert wan["diffusers_attention_backend"]
    t2v, i2v = wan["models"]["wan21_t2v_14b"], wan["models"]["wan22_i2v_a14b_expert"]
    for model in (t2v, i2v):
        assert _positive(model["step_s"]) and len(model["forward_s"]) == 2  # one CFG step: cond + uncond
        assert _positive(model["mfu_vs_measured_matmul"]) and _positive(model["model_tflop_per_forward"])
        assert _positive(model["gpu_hours"]) and model["mfu_vs_datasheet_peak"] is None  # no card on a CPU
    assert t2v["latent"][0] == 16 and i2v["latent"][0] == 36  # the I2V expert takes noisy + mask + image latents
    assert (t2v["steps_per_video"], t2v["videos"]) == (50, 80_000)
    assert (i2v["steps_per_video"], i2v["videos"]) == (40, 10_000)


def test_nvdec_section_measures_the_cpu_path_and_says_why_nvdec_is_missing(dry_run):
    nvdec = dry_run[1]["sections"]["nvdec"]
    for codec in ("libx264", "libx265"):
        row = nvdec["sources"][codec]
        assert _positive(row["cpu_1"]["clips_per_s"]) and _positive(row["cpu_all"]["clips_per_s"])
        assert _positive(row["cpu_1"]["cpu_ms_per_clip"]) and _positive(row["cpu_1"]["replica_equivalents"])
        assert isinstance(row["cpu_open"]["per_open_ms"], float) and _positive(row["cpu_open"]["per_frame_ms"])
        if nvdec["nvdec"]["available"]:
            assert all(_positive(r["clips_per_s"]) for r in row["nvdec"].values())
    if not nvdec["nvdec"]["available"]:
        error = nvdec["nvdec"]["error"]
        assert error.startswith("frames.decoder is 'nvdec' but ") and "frames: {decoder: pyav}" in error


def test_vbench_section_scores_on_the_device_and_end_to_end(dry_run):
    vbench = dry_run[1]["sections"]["vbench"]
    assert _positive(vbench["gpu_models"]["float32"]["videos_per_s"])
    assert _positive(vbench["end_to_end"]["videos_per_s"]) and vbench["end_to_end"]["videos"] >= 2
    assert set(vbench["setup"]["parameters"]) == {"dino", "clip_b32", "clip_l14"}


def test_tscm_section_gives_the_latency_curve_and_throughput(dry_run):
    tscm = dry_run[1]["sections"]["tscm"]
    rows = [r for r in tscm["rows"] if "skipped" not in r]
    assert {r["mode"] for r in rows} == {"tscm", "full", "sliding"}
    assert all(_positive(r["tokens_per_s"]) and _positive(r["chunk_ms"]) for r in rows)
    assert set(tscm["full_over_tscm"]) == {"1", "2"}
    assert _positive(tscm["training"]["tokens_per_s"])


def _fake_package(folder: Path, body: str) -> Path:
    (folder / "diffusers").mkdir(parents=True)
    (folder / "diffusers" / "__init__.py").write_text(body)
    return folder


def _first_on_path(folder: Path) -> str:
    return os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])


def test_a_failing_section_loses_none_of_the_others(tmp_path):
    fake = _fake_package(tmp_path / "site", "raise ImportError('diffusers is broken here')\n")
    out = tmp_path / "x.json"
    proc = _run(out, "--sections", "wan,tscm", env={"PYTHONPATH": _first_on_path(fake)})
    results = json.loads(out.read_text())
    assert proc.returncode == 1  # a section failed
    wan, tscm = results["sections"]["wan"], results["sections"]["tscm"]
    assert wan["ok"] is False and "diffusers is broken here" in wan["error"]
    assert wan["device"]["type"] == "cpu"  # what it measured before failing is kept
    assert tscm["ok"] is True and tscm["full_over_tscm"]


def test_a_section_past_its_time_is_stopped_and_the_rest_recorded(tmp_path):
    fake = _fake_package(tmp_path / "site", "import time\ntime.sleep(120)\n")
    out = tmp_path / "x.json"
    started = time.perf_counter()
    proc = _run(out, "--sections", "wan,vbench", "--budget", "8", env={"PYTHONPATH": _first_on_path(fake)})
    assert time.perf_counter() - started < 30
    results = json.loads(out.read_text())
    assert proc.returncode == 1
    wan, vbench = results["sections"]["wan"], results["sections"]["vbench"]
    assert wan["ok"] is False and wan["error"].startswith("timed out after")
    assert wan["device"]["type"] == "cpu"  # saved before the hang
    assert vbench["ok"] is False and vbench["error"].startswith("skipped: ")


def test_unknown_sections_are_refused(tmp_path):
    proc = _run(tmp_path / "x.json", "--sections", "wan,decode")
    assert proc.returncode == 2 and "unknown ['decode']" in proc.stderr


def test_wan_flop_count_matches_what_the_model_computes():
    """The MFU numerator: the closed-form count against torch's FLOP counter on a real (tiny) Wan forward, T2V and
    I2V-shaped. Held exactly: the count is integer arithmetic over the same shapes, so any drift (a term left out,
    a diffusers change in the block) is a real difference, and BENCHMARKS.md quotes it as exact."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    wan = _section("wan")
    import bench_wan_step as bench

    for config, latent in ((bench.TINY, bench.LATENT_TINY), ({**bench.TINY, "in_channels": 36}, (36, 3, 8, 8))):
        model = bench.build(config, "cpu", torch.float32)
        latents, cond, _ = bench.inputs(latent, config["text_dim"], 16, "cpu", torch.float32)
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), sdpa_kernel([SDPBackend.MATH]), counter:
            model(hidden_states=latents, timestep=torch.tensor([999]), encoder_hidden_states=cond, return_dict=False)
        counted = wan.wan_forward_flops(config, latent, 16)["total"]
        assert counted == counter.get_total_flops()


def test_the_14b_count_is_what_the_benchmarks_quote():
    wan = _section("wan")
    import bench_wan_step as bench

    flops = wan.wan_forward_flops(bench.WAN21_14B, bench.LATENT_720P, 512)
    assert flops["tokens"] == 75_600
    assert 6.0e15 < flops["total"] < 7.0e15 and 0.6 < flops["attention_share"] < 0.8


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0), ("NVIDIA H200 NVL", 835.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("Tesla T4", None),
])
def test_datasheet_peaks_by_card_name(name, tflops):
    peak = _section("common").datasheet_peak(name)
    assert (peak["tflops"] if peak else None) == tflops
