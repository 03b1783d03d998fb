"""Serving InternVL3-78B for captioning: the `vllm serve` command, a Slurm script for N replicas, Ray Serve notes.

`yume-data serve-vlm` prints `serve_command(...)` (and with `--run` executes it). The same engine settings
(`engine_args`) feed the `vllm` offline backend and the Ray Serve config, so the three ways of running the model
cannot drift apart.

vLLM version assumed: 0.10 or newer (the docs of 0.26-0.28 describe the same flags). What depends on it:

- `--limit-mm-per-prompt '{"image": 8, "video": 0}'`: the JSON form. Older releases took `image=8,video=0`; current
  ones parse JSON only (they also accept `{"image": {"count": 8, "width": ..., "height": ...}}` to shape the
  profiling run, not needed here since every frame is one tile).
- `--mm-processor-kwargs '{"max_dynamic_patch": 1}'`: vLLM's own InternVL processor (the original
  `OpenGVLab/InternVL3-*` repos, `InternVLChatModel`) reads `min_dynamic_patch`/`max_dynamic_patch`/
  `dynamic_image_size` from it. One tile per frame caps every frame at 256 tokens whatever image arrives; the
  frames are 448 px squares already (`captioning.frames`), so the cap only guards against other callers. Not
  passed for `-hf` checkpoints, whose HF processor takes other keys (and makes one tile of a 448 square anyway).
- `InternVL3-78B` needs `--trust-remote-code` (its config and tokenizer live in the repo's own code).

Sizing, for InternVL3-78B (InternViT-6B + Qwen2.5-72B, ~157 GB of bf16 weights) on H100-80GB:

- `--max-model-len`: 8 frames x (256 image tokens + `<img>`, `</img>` and a `FrameN:` label, ~8) = 2,112 tokens,
  + 1,024 for the system and user prompt (event-v1 with its few-shot examples and a scene hint is ~450), + 512 for
  the answer (the stage asks for up to 160), x 1.25 margin, rounded up to a multiple of 1,024: 5,120. A short
  context lets vLLM plan for more concurrent sequences than the model's 32k would.
- `--max-num-seqs`: the KV cache of Qwen2.5-72B costs 80 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 320 KiB
  per token. At `--gpu-memory-utilization 0.90`, 4 GPUs leave ~4 x (72 - 39 weights - ~5 activations) = ~112 GB
  of KV cache, ~340k tokens, ~95 sequences of ~3.6k tokens; 8 GPUs leave ~380 GB, ~1.16M tokens, ~320 sequences.
  Defaults: 64 on 4 GPUs and 256 on 8, below those so the batch rarely preempts and the shared system prompt stays
  in the prefix cache. Other GPU counts leave vLLM's default.
- Tensor parallel size = GPUs per replica (4 or 8; Qwen2.5-72B's 64 query / 8 KV heads divide by either). One
  replica per node; more throughput = more replicas (data parallel), not a wider tensor-parallel group.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from typing import Sequence

__all__ = [
    "DEFAULT_MODEL",
    "VLLM_VERSION_ASSUMED",
    "recommended_max_model_len",
    "default_max_num_seqs",
    "engine_args",
    "serve_command",
    "format_command",
    "slurm_script",
    "ray_serve_script",
    "ray_serve_notes",
    "read_endpoints",
]

DEFAULT_MODEL = "OpenGVLab/InternVL3-78B"
VLLM_VERSION_ASSUMED = "0.10"
TOKENS_PER_TILE = 256  # InternVL3: 448 px tile, patch 14 -> 32 x 32 patches, pixel shuffle 0.5 -> 16 x 16
TOKENS_PER_FRAME_EXTRA = 8  # <img>, </img>, "FrameN: " and a newline
TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)
_MAX_NUM_SEQS = {4: 64, 8: 256}  # InternVL3-78B on H100-80GB; see the module docstring
_NEEDS_4_GPUS = re.compile(r"(?<![0-9])(7[0-9]|[89][0-9]|[1-9][0-9]{2,})B", re.IGNORECASE)  # 70B and up


def recommended_max_model_len(
    images_per_prompt: int = 8,
    tokens_per_image: int = TOKENS_PER_TILE + TOKENS_PER_FRAME_EXTRA,
    prompt_tokens: int = 1024,
    answer_tokens: int = 512,
    margin: float = 1.25,
    multiple: int = 1024,
) -> int:
    """Context length for requests of `images_per_prompt` one-tile frames: (images + prompt + answer) x margin,
    rounded up to `multiple`. 5,120 for the defaults."""
    if images_per_prompt < 0 or min(tokens_per_image, prompt_tokens, answer_tokens, multiple) < 1 or margin < 1:
        raise ValueError("image count must be >= 0, token budgets and multiple >= 1, margin >= 1")
    need = (images_per_prompt * tokens_per_image + prompt_tokens + answer_tokens) * margin
    return int(math.ceil(need / multiple) * multiple)


def default_max_num_seqs(gpus: int) -> int | None:
    """Concurrent sequences for InternVL3-78B on `gpus` H100-80GB (None: leave vLLM's default)."""
    return _MAX_NUM_SEQS.get(gpus)


def _is_original_internvl(model: str) -> bool:
    """The original (remote-code) InternVL repos take vLLM's `max_dynamic_patch`; `-hf` conversions do not."""
    name = model.rstrip("/").lower()
    return "internvl" in name and not name.endswith("-hf")


def engine_args(
    model: str = DEFAULT_MODEL,
    *,
    gpus: int = 4,
    max_model_len: int | None = None,
    max_num_seqs: int | None = None,
    images_per_prompt: int = 8,
    gpu_memory_utilization: float = 0.90,
    max_tiles_per_image: int = 1,
    trust_remote_code: bool = True,
    dtype: str = "bfloat16",
    seed: int = 0,
) -> dict:
    """vLLM engine arguments (the keyword names of `vllm.LLM` and of Ray Serve's `engine_kwargs`)."""
    if gpus not in TENSOR_PARALLEL_SIZES:
        raise ValueError(f"gpus (tensor parallel size) must be one of {TENSOR_PARALLEL_SIZES}, got {gpus}")
    if _NEEDS_4_GPUS.search(model) and gpus < 4:
        raise ValueError(
            f"{model} has ~157 GB of bf16 weights: it needs 4 or 8 80 GB GPUs per replica (tensor parallel), got {gpus}"
        )
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}")
    if not 0.1 <= gpu_memory_utilization <= 0.98:
        raise ValueError(f"gpu_memory_utilization must be in [0.1, 0.98], got {gpu_memory_utilization}")
    if max_tiles_per_image < 1:
        raise ValueError(f"max_tiles_per_image must be >= 1, got {max_tiles_per_image}")
    if max_model_len is None:
        per_image = max_tiles_per_image * TOKENS_PER_TILE + TOKENS_PER_FRAME_EXTRA
        if max_tiles_per_image > 1:
            per_image += TOKENS_PER_TILE  # the thumbnail InternVL adds to a multi-tile image
        max_model_len = recommended_max_model_len(images_per_prompt, per_image)
    if max_num_seqs is None:
        max_num_seqs = default_max_num_seqs(gpus)
    args: dict = {
        "model": model,
        "tensor_parallel_size": gpus,
        "trust_remote_code": trust_remote_code,
        "dtype": dtype,
        "max_model_len": int(max_model_len),
        "gpu_memory_utilization": float(gpu_memory_utilization),
        "limit_mm_per_prompt": {"image": int(images_per_prompt), "video": 0},
        "seed": int(seed),
    }
    if max_num_seqs is not None:
        args["max_num_seqs"] = int(max_num_seqs)
    if _is_original_internvl(model):
        args["mm_processor_kwargs"] = {"max_dynamic_patch": int(max_tiles_per_image)}
    return args


def serve_command(
    model: str = DEFAULT_MODEL,
    gpus: int = 4,
    port: int = 8000,
    max_model_len: int | None = None,
    max_num_seqs: int | None = None,
    images_per_prompt: int = 8,
    extra: Sequence[str] = (),
    *,
    host: str = "0.0.0.0",
    gpu_memory_utilization: float = 0.90,
    served_model_name: str | None = None,
    max_tiles_per_image: int = 1,
    dtype: str = "bfloat16",
    seed: int = 0,
) -> list[str]:
    """The `vllm serve` argv for one replica of `model` over `gpus` GPUs (see the module docstring for the sizes).
    `served_model_name` (default: the model id) is the `model` the OpenAI clients send; `extra` is appended
    verbatim (later flags win in vLLM's parser). `tiny-random[:seed]` is built and served from its directory
    under the name `tiny-random` (a smoke test of a GPU node without downloading 157 GB)."""
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be in 1..65535, got {port}")
    if model.startswith("tiny-random"):
        from captioning.backends.model_spec import resolve_model

        served_model_name = served_model_name or model
        model = resolve_model(model, "vllm").source
    args = engine_args(
        model, gpus=gpus, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
        images_per_prompt=images_per_prompt, gpu_memory_utilization=gpu_memory_utilization,
        max_tiles_per_image=max_tiles_per_image, dtype=dtype, seed=seed,
    )
    argv = ["vllm", "serve", args.pop("model")]
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            continue
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    argv += ["--served-model-name", served_model_name or model, "--host", host, "--port", str(int(port))]
    return argv + [str(x) for x in extra]


def format_command(argv: Sequence[str]) -> str:
    """A shell-quoted command, one flag per line, ready to paste."""
    out, line = [], [shlex.quote(argv[0])]
    for token in argv[1:]:
        if token.startswith("--"):
            out.append(" ".join(line))
            line = [token]
        else:
            line.append(shlex.quote(token))
    out.append(" ".join(line))
    return " \\\n    ".join(out)


def slurm_script(
    model: str = DEFAULT_MODEL,
    replicas: int = 2,
    gpus: int = 4,
    port: int = 8000,
    *,
    endpoints_dir: str = "$HOME/yume-vlm-endpoints",
    partition: str | None = None,
    account: str | None = None,
    time_limit: str = "24:00:00",
    cpus_per_gpu: int = 8,
    mem: str | None = None,
    served_model_name: str | None = None,
    **serve_kwargs,
) -> str:
    """An `sbatch` script that runs `replicas` vLLM servers as a job array, one per array task (one node's worth
    of `gpus` GPUs each). Each replica writes `http://<host>:<port>/v1` to `<endpoints_dir>/replica-<i>.url` once it
    answers `/health`, and removes the file when it stops; point the captioning flow at the live ones with
    `read_endpoints(endpoints_dir)`. Ports are `port + array index`, so two 4-GPU replicas Slurm packs onto one
    8-GPU node do not collide."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    argv = serve_command(model, gpus, 1, served_model_name=served_model_name, **serve_kwargs)
    at = argv.index("--port")
    argv[at + 1] = "__PORT__"
    serve = format_command(argv).replace("__PORT__", '"$PORT"')
    directives = [
        "--job-name=yume-vlm",
        f"--array=0-{replicas - 1}",
        "--nodes=1",
        "--ntasks=1",
        f"--gres=gpu:{gpus}",
        f"--cpus-per-task={gpus * cpus_per_gpu}",
        f"--time={time_limit}",
        "--output=yume-vlm-%A_%a.log",
    ]
    if mem:
        directives.append(f"--mem={mem}")
    if partition:
        directives.append(f"--partition={partition}")
    if account:
        directives.append(f"--account={account}")
    header = "\n".join(f"#SBATCH {d}" for d in directives)
    return f"""#!/bin/bash
{header}
# {replicas} replica(s) of {model}, tensor parallel over {gpus} GPUs each (captioning.serving.slurm_script).
# Submit: sbatch this.sh   Stop: scancel <jobid>   Endpoints: ls {endpoints_dir}
set -euo pipefail
PORT=$(( {int(port)} + SLURM_ARRAY_TASK_ID ))
ENDPOINTS="{endpoints_dir}"
mkdir -p "$ENDPOINTS"
ENDPOINT_FILE="$ENDPOINTS/replica-$SLURM_ARRAY_TASK_ID.url"
trap 'rm -f "$ENDPOINT_FILE"; kill ${{SERVER:-}} 2>/dev/null || true' EXIT
# Weights: set HF_HOME to a shared filesystem filled beforehand (huggingface-cli download {model}) and
# HF_HUB_OFFLINE=1 so N replicas do not download 157 GB each.

{serve} &
SERVER=$!

# Publish the endpoint only once the model is loaded and serving (GET /health answers 200).
until curl -sf "http://localhost:$PORT/health" >/dev/null; do
    if ! kill -0 "$SERVER" 2>/dev/null; then
        echo "vllm serve exited before it became healthy" >&2
        wait "$SERVER" || exit $?
        exit 1
    fi
    sleep 10
done
echo "http://$(hostname -f):$PORT/v1" > "$ENDPOINT_FILE"
echo "replica $SLURM_ARRAY_TASK_ID serving at $(cat "$ENDPOINT_FILE")"
wait "$SERVER"
"""


def ray_serve_script(
    model: str = DEFAULT_MODEL,
    replicas: int = 2,
    gpus: int = 4,
    *,
    served_model_name: str | None = None,
    accelerator_type: str = "H100",
    port: int = 8000,
    **engine_kwargs,
) -> str:
    """A Python script that serves `replicas` copies of `model` on a running Ray cluster with Ray Serve LLM
    (`ray[serve,llm]`), behind one OpenAI-compatible endpoint on the head node that balances over the replicas."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    args = engine_args(model, gpus=gpus, **engine_kwargs)
    args.pop("model")
    name = served_model_name or model
    return f'''"""Serve {replicas} x {model} (tensor parallel {gpus}) on this Ray cluster: python this.py"""
from ray import serve
from ray.serve.llm import LLMConfig, build_openai_app

llm_config = LLMConfig(
    model_loading_config={{"model_id": {name!r}, "model_source": {model!r}}},
    accelerator_type={accelerator_type!r},
    deployment_config={{"num_replicas": {int(replicas)}}},
    engine_kwargs={args!r},
)
serve.start(http_options={{"host": "0.0.0.0", "port": {int(port)}}})
serve.run(build_openai_app({{"llm_configs": [llm_config]}}), blocking=True)
'''


def ray_serve_notes(model: str = DEFAULT_MODEL, replicas: int = 2, gpus: int = 4, port: int = 8000) -> str:
    """How to run `replicas` replicas on a Ray cluster and point the captioning flow at them."""
    return f"""Ray cluster: {replicas} replica(s) of {model}, {gpus} GPUs each
1. On every node: pip install "ray[serve,llm]" "yume-data[gpu]"; fill the Hugging Face cache on shared storage
   (huggingface-cli download {model}) and export HF_HOME there and HF_HUB_OFFLINE=1.
2. Start the cluster: `ray start --head` on one node, `ray start --address=<head>:6379` on the others
   ({replicas * gpus} GPUs in all).
3. On the head node, save the script from `captioning.serving.ray_serve_script(...)` and run it. Ray Serve
   places each replica's {gpus} tensor-parallel workers on one node and balances requests over the replicas behind
   a single OpenAI-compatible endpoint: http://<head>:{port}/v1
4. Point the flow at it with the openai backend: --backend openai --endpoint http://<head>:{port}/v1
   --model <served model name>. One endpoint is enough (Ray balances); raise the client's concurrency to about
   {replicas} x max-num-seqs so every replica stays busy.
Alternatively run the Slurm-style `vllm serve` replicas as plain processes (one per node) and pass each
http://<node>:{port}/v1 as its own --endpoint: the openai backend balances over several endpoints itself.
"""


def read_endpoints(endpoints_dir: str | Path) -> list[str]:
    """The endpoint URLs the Slurm replicas published (`replica-*.url`), sorted; empty if none is up yet."""
    folder = Path(endpoints_dir).expanduser()
    if not folder.is_dir():
        return []
    urls = []
    for path in sorted(folder.glob("replica-*.url")):
        url = path.read_text(encoding="utf-8").strip()
        if url:
            urls.append(url)
    return urls
