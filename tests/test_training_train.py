"""Training loop: the loss falls, checkpoints hold everything, and a resumed run takes the same next step."""

import json
import shutil

import pytest
import torch

from training_stub import checkpoint as ckpt
from training_stub.config import config_from_dict, load_config
from training_stub.train import (
    ACTION_CACHE,
    METRICS_LOG,
    LOSS_PLOT,
    Trainer,
    collate,
    train,
)
from yume_core.actions import load_vocabulary

PHRASES = load_vocabulary("yume15").all_phrases()
# models this small run faster on one intra-op thread, and on a busy machine far more predictably
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {
    "data": {"latents": {"height": 16, "width": 16, "patch": 4}, "chunk_latents": 2, "max_history_chunks": 3},
    "model": {"width": 64, "depth": 2, "heads": 2, "tscm": {"tiers": [[2, 1, 2, 2], [4, 1, 4, 4]], "channel_dim": 16}},
    "batch_size": 4,
    "log_every": 5,
    "optim": {"warmup_steps": 5, "lr": 2e-3},
}


class ExactWindows:
    """A stand-in for WindowLoader with an exact data position: clips of a smooth pattern drifting over time, cut
    into windows as the contract describes (history = latent 0 + the latents right before the chunk)."""

    def __init__(self, config, phrases, clips=4, latents=11):
        space, chunk, keep = config.data.latents, config.data.chunk_latents, config.data.max_history_chunks
        c, (h, w) = space.channels, space.latent_size
        g = torch.Generator().manual_seed(0)
        yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
        self.windows = []
        for clip in range(clips):
            phase = torch.rand(c, 1, 1, generator=g) * 6
            t = torch.arange(latents).float().view(-1, 1, 1, 1)
            lat = torch.sin(0.7 * xx + 0.4 * yy + phase + 0.3 * t * (clip + 1))
            for k in range((latents - 1) // chunk):
                start = 1 + k * chunk
                hist = list(range(start)) if start <= keep * chunk + 1 else [0, *range(start - keep * chunk, start)]
                self.windows.append({
                    "key": f"c{clip}#{k}", "clip_id": f"c{clip}", "chunk_index": k, "chunk_start": start,
                    "history": lat[hist], "chunk": lat[start : start + chunk], "actions": [phrases[k % 3]],
                    "text": "a narrow street with shops" if clip % 2 else "",
                })
        self.position = 0

    def __iter__(self):
        while True:
            window = self.windows[self.position % len(self.windows)]
            self.position += 1
            yield window

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from training_stub.text import embed_actions

    return embed_actions(tmp_path_factory.mktemp("actions") / ACTION_CACHE, phrases=PHRASES[:6])


def _silent(_msg):
    pass


def test_loss_falls_and_the_run_leaves_a_log_a_plot_and_a_checkpoint(tmp_path, cache):
    config = load_config("cpu", {**SMALL, "steps": 80, "checkpoint_every": 0})
    phrases = PHRASES[:3]
    summary = train(None, config, tmp_path, action_cache=cache, device="cpu",
                    windows=ExactWindows(config, phrases), log=_silent)
    assert summary["steps"] == 80
    rows = [json.loads(line) for line in (tmp_path / METRICS_LOG).read_text().splitlines()]
    first, last = (sum(r["loss"] for r in part) / 10 for part in (rows[:10], rows[-10:]))
    assert last < 0.8 * first, (first, last)  # measured: about 1.47 -> 1.04
    assert [r["step"] for r in rows] == list(range(1, 81)) and all(r["windows"] == 4 for r in rows)
    assert (tmp_path / LOSS_PLOT).read_bytes()[:4] == b"\x89PNG"
    folder = ckpt.resolve(tmp_path)
    assert folder.name == "step-0000080"
    state = ckpt.read_state(folder)
    assert state["step"] == 80 and state["data"] == {"position": 320}
    assert config_from_dict(state["config"]).model.text_dim == 32  # resolved from the action cache


def test_optimizer_state_round_trips_through_safetensors(tmp_path, cache):
    config = load_config("cpu", SMALL)
    windows = ExactWindows(config, PHRASES[:3])
    trainer = Trainer(config, text_dim=32)
    from training_stub.train import TextSide, batches

    stream = batches(iter(windows), TextSide("tiny-random", 64, cache), config)
    for _ in range(2):
        trainer.train_step([next(stream)])
    folder = trainer.save(tmp_path, windows.state_dict())
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    other = Trainer(config, text_dim=32)
    other.restore(folder)
    a, b = trainer.optimizer.state_dict(), other.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid, entry in a["state"].items():
        for name, value in entry.items():
            assert torch.equal(value, b["state"][pid][name]), (pid, name)
    for (name, p), q in zip(trainer.model.named_parameters(), other.model.parameters()):
        assert torch.equal(p, q), name
    assert other.step == 2 and torch.equal(other.generator.get_state(), trainer.generator.get_state())


def test_resume_from_a_checkpoint_gives_the_same_next_loss(tmp_path, cache):
    config = load_config("cpu", {**SMALL, "steps": 6, "checkpoint_every": 5})
    phrases = PHRASES[:3]
    straight = tmp_path / "straight"
    train(None, config, straight, action_cache=cache, device="cpu", windows=ExactWindows(config, phrases), log=_silent)
    expected = [json.loads(line)["loss"] for line in (straight / METRICS_LOG).read_text().splitlines()][-1]
    # a second run starts from the step-5 checkpoint the first one wrote midway, with fresh objects everywhere
    resumed = tmp_path / "resumed"
    shutil.copytree(ckpt.step_dir(straight, 5), ckpt.step_dir(resumed, 5))
    (resumed / "checkpoints" / ckpt.LATEST).write_text("step-0000005\n")
    summary = train(None, config, resumed, action_cache=cache, device="cpu", windows=ExactWindows(config, phrases),
                    log=_silent)
    rows = [json.loads(line) for line in (resumed / METRICS_LOG).read_text().splitlines()]
    assert summary["steps"] == 6 and [r["step"] for r in rows] == [6]
    assert rows[0]["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # without the checkpoint (another data position, another RNG state) the step differs
    fresh = train(None, load_config("cpu", {**SMALL, "steps": 1}), tmp_path / "fresh", action_cache=cache,
                  device="cpu", windows=ExactWindows(config, phrases), log=_silent)
    assert fresh["loss_end"] != pytest.approx(expected, rel=1e-3)


def test_collate_pads_chunks_of_different_lengths_and_keeps_histories_apart():
    w = [
        {"chunk_index": 0, "history": torch.zeros(1, 3, 2, 2), "chunk": torch.ones(2, 3, 2, 2)},
        {"chunk_index": 4, "chunk_start": 9, "history": torch.zeros(9, 3, 2, 2), "chunk": torch.ones(1, 3, 2, 2)},
    ]
    batch = collate(w, [torch.zeros(3, 4), torch.zeros(0, 4)], chunk_latents=2)
    assert batch.chunk.shape == (2, 2, 3, 2, 2) and batch.chunk_mask.tolist() == [[True, True], [True, False]]
    assert batch.chunk_starts == [1, 9] and [h.shape[0] for h in batch.histories] == [1, 9]
    assert collate(w[:1], [torch.zeros(1, 4)], 2).chunk_mask is None


def test_bad_settings_and_a_mismatched_cache_are_clear_errors(tmp_path, cache):
    from yume_core.config import ConfigError

    with pytest.raises(ConfigError, match="autocast"):
        load_config("cpu", {"autocast": "fp8"})
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("preset: big\nsteps: 3\n")
    assert load_config(yaml_file).model.width == 768 and load_config(yaml_file).steps == 3
    yaml_file.write_text("preset: huge\n")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(yaml_file)
    with pytest.raises(FileNotFoundError, match="action cache"):
        train(None, load_config("cpu", SMALL), tmp_path / "x", action_cache=tmp_path / "none.safetensors",
              windows=[], log=_silent)


@pytest.mark.parametrize("autocast, dtype", [("bf16", torch.bfloat16), ("off", torch.float32)])
def test_bf16_autocast_trains_on_cpu(cache, autocast, dtype):
    """`autocast: bf16` really runs the step's matmuls in bf16 on a CPU (hooks record what the blocks' linear layers
    compute in, so a step that never entered autocast fails), keeps the weights fp32, and trains; `off` computes
    in fp32."""
    config = load_config("cpu", {**SMALL, "autocast": autocast})
    from training_stub.train import TextSide, batches

    trainer = Trainer(config, text_dim=32)
    seen = []
    block = trainer.model.blocks[0]
    layers = {"self-attention": block.attn.qkv, "mlp": block.mlp[0], "channel fusion": block.fusion.kv}
    hooks = [m.register_forward_hook(lambda _m, _args, out, name=name: seen.append((name, out.dtype)))
             for name, m in layers.items()]
    stream = batches(iter(ExactWindows(config, PHRASES[:3])), TextSide("tiny-random", 64, cache), config)
    losses = [trainer.train_step([next(stream)]) for _ in range(2)]
    for hook in hooks:
        hook.remove()
    assert {name for name, _ in seen} == set(layers) and {d for _, d in seen} == {dtype}, seen
    assert all(0 < loss < 10 for loss in losses)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # weights stay fp32 (mixed precision)


def test_a_long_history_trains_the_channel_path_past_what_the_temporal_spatial_path_keeps():
    """The `cpu` preset's tiers keep the newest 32 history latents (and the first) in self-attention; a long window
    (`DataConfig.long_history`) has older ones, which reach the loss only through the channel path. So, once training
    has moved the zero-initialised layers: the loss has a gradient on those latents and on the channel path's
    parameters, and the temporal-spatial tokens alone have none on them."""
    from training_stub.windows import cut_windows

    config = load_config("cpu", {"batch_size": 1, "text_dropout": 0.0})
    data, chunk = config.data, config.data.chunk_latents
    windows = cut_windows(1 + 14 * chunk, chunk, data.max_history_chunks, data.latents, long_history=1.0,
                          long_history_chunks=data.long_history_chunks, key="clip")
    window = windows[-1]
    kept = data.max_history_chunks * chunk  # what the tiers keep too
    assert config.model.tscm.tiers[-1][0] == kept and len(window.history) == 1 + 13 * chunk > 1 + kept
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1 + 14 * chunk, data.latents.channels, *data.latents.latent_size, generator=g)
    context = [torch.randn(3, 32, generator=g)]

    def batch(history):
        w = {"history": history, "chunk": latents[window.chunk_start : window.chunk_stop],
             "chunk_start": window.chunk_start}
        return collate([w], context, chunk)

    trainer = Trainer(config, text_dim=32)
    for _ in range(2):  # adaLN-Zero: the output layer leaves zero in the first step, the up-projections in the next
        trainer.train_step([batch(latents[window.history])])
    model = trainer.model
    history = latents[window.history].clone().requires_grad_()
    trainer.loss(batch(history)).backward()
    old = slice(1, len(window.history) - kept)  # after the first latent, before the newest `kept`
    assert history.grad[old].abs().amax(dim=(1, 2, 3)).min() > 0  # every old latent reaches the loss
    assert model.history.channel.weight.grad.abs().sum() > 0
    assert all(block.fusion.kv.weight.grad.abs().sum() > 0 for block in model.blocks)
    alone = history.detach().clone().requires_grad_()
    model.history.temporal_spatial(alone, window.chunk_start, "tscm").sum().backward()
    assert torch.count_nonzero(alone.grad[old]) == 0
    assert alone.grad[0].abs().sum() > 0 and alone.grad[old.stop :].abs().amax(dim=(1, 2, 3)).min() > 0
