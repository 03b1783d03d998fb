"""The `vllm serve` command builder, the Slurm script and the Ray Serve script for N replicas of InternVL3-78B."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import pytest

from captioning.serving import (
    DEFAULT_MODEL,
    engine_args,
    format_command,
    ray_serve_notes,
    ray_serve_script,
    read_endpoints,
    recommended_max_model_len,
    serve_command,
    slurm_script,
)


def flags(argv: list[str]) -> dict:
    """`--flag value` pairs (value True for a bare flag) of a `vllm serve` argv."""
    out, i = {}, 3
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[argv[i]] = argv[i + 1]
            i += 2
        else:
            out[argv[i]] = True
            i += 1
    return out


@pytest.mark.parametrize("gpus, seqs", [(4, 64), (8, 256)])
def test_serve_command_for_internvl3_78b(gpus, seqs):
    argv = serve_command(DEFAULT_MODEL, gpus=gpus, port=8123)
    assert argv[:3] == ["vllm", "serve", "OpenGVLab/InternVL3-78B"]
    f = flags(argv)
    assert f["--tensor-parallel-size"] == str(gpus)
    assert f["--trust-remote-code"] is True
    assert json.loads(f["--limit-mm-per-prompt"]) == {"image": 8, "video": 0}
    assert json.loads(f["--mm-processor-kwargs"]) == {"max_dynamic_patch": 1}
    # 8 frames x 256 image tokens + prompt + answer, with margin, inside Qwen2.5-72B's 32k context
    assert 8 * 256 + 1024 + 160 < int(f["--max-model-len"]) <= 8192
    assert f["--max-num-seqs"] == str(seqs)
    assert 0.8 <= float(f["--gpu-memory-utilization"]) < 0.98
    assert f["--served-model-name"] == DEFAULT_MODEL
    assert (f["--port"], f["--host"], f["--dtype"]) == ("8123", "0.0.0.0", "bfloat16")


def test_serve_command_options_and_extra_flags():
    argv = serve_command(DEFAULT_MODEL, gpus=8, max_model_len=16384, max_num_seqs=32, images_per_prompt=16,
                         served_model_name="internvl3-78b", extra=["--enable-chunked-prefill"])
    f = flags(argv)
    assert f["--max-model-len"] == "16384" and f["--max-num-seqs"] == "32"
    assert json.loads(f["--limit-mm-per-prompt"])["image"] == 16
    assert f["--served-model-name"] == "internvl3-78b" and argv[-1] == "--enable-chunked-prefill"
    hf = flags(serve_command("OpenGVLab/InternVL3-8B-hf", gpus=1))
    assert "--mm-processor-kwargs" not in hf and "--max-num-seqs" not in hf  # -hf processor; vLLM's default


def test_context_length_budget():
    assert recommended_max_model_len() == 5120
    assert recommended_max_model_len(images_per_prompt=16) > recommended_max_model_len()
    assert recommended_max_model_len() % 1024 == 0
    tiled = engine_args(DEFAULT_MODEL, max_tiles_per_image=4)
    assert tiled["max_model_len"] >= 8 * 5 * 256 and tiled["mm_processor_kwargs"] == {"max_dynamic_patch": 4}


@pytest.mark.parametrize("kwargs, message", [
    (dict(gpus=3), "tensor parallel"),
    (dict(gpus=2), "157 GB"),
    (dict(port=70000), "port"),
    (dict(images_per_prompt=0), "images_per_prompt"),
    (dict(gpu_memory_utilization=1.5), "gpu_memory_utilization"),
])
def test_serve_command_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        serve_command(DEFAULT_MODEL, **kwargs)


def test_format_command_round_trips_through_the_shell():
    argv = serve_command(DEFAULT_MODEL, gpus=4)
    text = format_command(argv)
    assert text.count("\\\n") == sum(a.startswith("--") for a in argv)
    assert shlex.split(text.replace("\\\n", " ")) == argv


def test_tiny_random_is_served_from_its_directory(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("YUME_DATA_CACHE", str(tmp_path))
    argv = serve_command("tiny-random", gpus=1)
    assert argv[2].startswith(str(tmp_path)) and flags(argv)["--served-model-name"] == "tiny-random"


def test_slurm_script_runs_one_replica_per_array_task(tmp_path):
    script = slurm_script(DEFAULT_MODEL, replicas=3, gpus=8, port=9000, partition="gpu", account="proj",
                          endpoints_dir=str(tmp_path / "eps"))
    assert "#SBATCH --array=0-2" in script and "#SBATCH --gres=gpu:8" in script
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --account=proj" in script
    assert "PORT=$(( 9000 + SLURM_ARRAY_TASK_ID ))" in script
    assert '--port "$PORT"' in script and "--tensor-parallel-size 8" in script
    assert "/health" in script and "replica-$SLURM_ARRAY_TASK_ID.url" in script
    path = tmp_path / "serve.sh"
    path.write_text(script)
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(path)], check=True)  # valid shell syntax
    with pytest.raises(ValueError):
        slurm_script(replicas=0)


def test_slurm_script_publishes_endpoints_when_healthy(tmp_path):
    """Run the script with `vllm` and `curl` replaced by stubs: it writes the endpoint file once /health answers
    and removes it when the server exits."""
    if not shutil.which("bash"):
        pytest.skip("needs bash")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text("#!/bin/bash\necho \"$@\" > \"$STUB_ARGS\"\nsleep 0.5\n")
    (bin_dir / "curl").write_text("#!/bin/bash\nexit 0\n")
    (bin_dir / "hostname").write_text("#!/bin/bash\necho node7\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    eps = tmp_path / "eps"
    script = tmp_path / "serve.sh"
    script.write_text(slurm_script(DEFAULT_MODEL, replicas=2, gpus=4, port=8000, endpoints_dir=str(eps))
                      .replace("sleep 10", "sleep 0.1")
                      .replace('wait "$SERVER"\n', 'cp "$ENDPOINT_FILE" "$STUB_SEEN"; wait "$SERVER"\n'))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "1", "HOME": str(tmp_path),
           "STUB_ARGS": str(tmp_path / "args"), "STUB_SEEN": str(tmp_path / "seen")}
    subprocess.run(["bash", str(script)], env=env, check=True, timeout=30)
    assert (tmp_path / "seen").read_text().strip() == "http://node7:8001/v1"
    assert "--port 8001" in (tmp_path / "args").read_text()
    assert read_endpoints(eps) == []  # removed when the server stopped
    (eps / "replica-0.url").write_text("http://a:8000/v1\n")
    (eps / "replica-1.url").write_text("http://b:8001/v1\n")
    assert read_endpoints(eps) == ["http://a:8000/v1", "http://b:8001/v1"]
    assert read_endpoints(tmp_path / "absent") == []


def test_ray_serve_script_and_notes():
    source = ray_serve_script(DEFAULT_MODEL, replicas=4, gpus=8, served_model_name="internvl3-78b")
    compile(source, "serve_internvl.py", "exec")  # valid Python
    assert '"num_replicas": 4' in source and "'tensor_parallel_size': 8" in source
    assert "'limit_mm_per_prompt': {'image': 8, 'video': 0}" in source and "internvl3-78b" in source
    notes = ray_serve_notes(DEFAULT_MODEL, replicas=4, gpus=8)
    assert "ray start --head" in notes and "--backend openai" in notes and "/v1" in notes
