"""Checkpoints as plain files: `model.safetensors`, `optimizer.safetensors` and `state.json`, one folder per step.

safetensors holds tensors only (no pickle, so loading a checkpoint runs no code); the optimizer's per-parameter
tensors are flattened to `state.<param index>.<name>` and its non-tensor state (param groups, scalars) rides in
the file's JSON metadata. `state.json` holds the step, the data position, the config and the RNG state; it is
written last, and `latest` (a one-line file naming the newest complete folder) is replaced only after it, so a run
killed mid-save resumes from the previous checkpoint. Every file is written atomically.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from yume_core.storage import atomic_path, atomic_write_text

MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, LATEST = "model.safetensors", "optimizer.safetensors", "state.json", "latest"


def step_dir(output: str | Path, step: int) -> Path:
    return Path(output) / "checkpoints" / f"step-{step:07d}"


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entry in sd["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars)}


def load_optimizer(optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for key, value in json.loads(meta["scalars"]).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    # JSON turned tuples (betas) into lists; the optimiser's own groups hold tuples
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in json.loads(meta["param_groups"])]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def generator_state(generator: torch.Generator) -> str:
    return base64.b64encode(generator.get_state().numpy().tobytes()).decode("ascii")


def restore_generator(generator: torch.Generator, state: str) -> None:
    raw = bytearray(base64.b64decode(state))
    generator.set_state(torch.frombuffer(raw, dtype=torch.uint8).clone())


def save_checkpoint(output: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict) -> Path:
    """Write the checkpoint of `step` under `output/checkpoints/` and point `latest` at it; return its folder."""
    folder = step_dir(output, step)
    folder.mkdir(parents=True, exist_ok=True)
    _save_tensors(folder / MODEL_FILE, dict(model.state_dict()), {"format": "pt"})
    if optimizer is not None:
        tensors, meta = optimizer_tensors(optimizer)
        _save_tensors(folder / OPTIMIZER_FILE, tensors, meta)
    atomic_write_text(folder / STATE_FILE, json.dumps({**state, "step": step}, indent=2, ensure_ascii=False))
    atomic_write_text(Path(output) / "checkpoints" / LATEST, folder.name + "\n")
    return folder


def resolve(path: str | Path) -> Path | None:
    """A checkpoint folder from a step folder, a `checkpoints` folder or a run's output folder (newest complete
    one); None when there is none."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    for base in (path, path / "checkpoints"):
        latest = base / LATEST
        if latest.is_file():
            folder = base / latest.read_text().strip()
            if (folder / STATE_FILE).is_file():
                return folder
    return None


def read_state(folder: str | Path) -> dict:
    return json.loads((Path(folder) / STATE_FILE).read_text())


def load_model_weights(model: torch.nn.Module, folder: str | Path) -> None:
    model.load_state_dict(load_file(str(Path(folder) / MODEL_FILE)))
