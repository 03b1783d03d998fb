"""Training on the mixture: T2V and I2V steps alternate over weighted sets, every step is logged with its task and
sets, the realised shares are the sampler's (whose weights are the sets' shares), a resumed run continues exactly,
and unlabelled sets train."""

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from training_stub import checkpoint as ckpt
from training_stub.config import load_config
from training_stub.infer_check import check_checkpoint
from training_stub.mixture import MixtureWindows, StreamWindows
from training_stub.train import ACTION_CACHE, LOSS_PLOT, METRICS_LOG, TextSide, _batch, task_window, train
from yume_core.mixture import InfeasibleShares, MixtureSampler, MixtureSource, read_mixture, write_mixture

# models this small run faster on one intra-op thread, and on a busy machine far more predictably
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    "data": {"latents": {"height": 16, "width": 32, "patch": 4}, "chunk_latents": 2, "max_history_chunks": 2,
             "shuffle_buffer": 4},
    "model": {"width": 32, "depth": 1, "heads": 2, "tscm": {"tiers": [[2, 1, 2, 2], [6, 1, 4, 4]]}},
    "batch_size": 4,
    "log_every": 100,
    "checkpoint_every": 0,
}
WEIGHTS = {"real_world": 0.5, "synthetic": 0.3, "event": 0.2}


def _silent(_msg):
    pass


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Three sets as the build writes them: real-world clips with actions (two of three with an event caption, so
    one clip trains T2V only), synthetic videos (T2V, no labels) and event videos with start images (T2V+I2V, no
    labels), and the mixture file over them."""
    from pipelines.sample_mixture import make_sample_mixture

    root = tmp_path_factory.mktemp("mixture")
    mixture = make_sample_mixture(root, clips=3, clip_frames=40, clip_size=(64, 36), videos=3, video_frames=40,
                                  video_size=(64, 36), weights=WEIGHTS, shard_max_count=2)
    out = root / "out"
    return {"root": root, "out": out, "mixture": mixture}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from training_stub.text import embed_actions

    return embed_actions(tmp_path_factory.mktemp("actions") / ACTION_CACHE)


def _rows(run):
    return [json.loads(line) for line in (run / METRICS_LOG).read_text().splitlines()]


def _train(source, run, cache, steps, **kw):
    config = load_config("cpu", {**TINY, **kw.pop("settings", {})})
    return train(None, config, run, steps=steps, action_cache=cache, device="cpu", log=_silent, mixture=source, **kw)


# ------------------------------------------------------------------------------------------------ streams


def test_each_set_streams_the_windows_of_each_task_it_trains(sets):
    data = MixtureWindows.open(sets["mixture"], load_config("cpu", TINY).data, log=_silent)
    assert sorted(s.key for s in data.streams.values()) == [
        "event/i2v", "event/t2v", "real_world/i2v", "real_world/t2v", "synthetic/t2v"]
    seen = {}
    for (i, task), stream in data.streams.items():
        seen[stream.key] = [stream.next() for _ in range(12)]  # 40 frames: 4 windows per clip
        for w in seen[stream.key]:
            assert task in w["tasks"] and w["set"] == data.sources[i].name and w["texts"][task]
    # no labels, no action description: the windows are kept, with an empty one
    for key in ("synthetic/t2v", "event/t2v", "event/i2v"):
        assert all(w["actions"] == [] for w in seen[key])
    assert all(w["actions"] for w in seen["real_world/t2v"])
    # real-world I2V trains on the event caption, only of the clips that have one; T2V on the scene caption
    assert {w["texts"]["i2v"] for w in seen["real_world/i2v"]} <= {f"A street musician starts to play, scene {i}." for i in (0, 2)}
    assert len({w["clip_id"] for w in seen["real_world/t2v"]}) == 3
    assert len({w["clip_id"] for w in seen["real_world/i2v"]}) == 2
    assert all(w["texts"]["t2v"] != w["texts"]["i2v"] for w in seen["real_world/i2v"])
    assert seen["synthetic/t2v"][0]["texts"] == {"t2v": seen["synthetic/t2v"][0]["texts"]["t2v"], "i2v": None}


def test_t2v_generates_the_first_frame_and_i2v_keeps_it_clean(sets, cache):
    config = load_config("cpu", TINY)
    data = MixtureWindows.open(sets["out"] / "event", config.data, log=_silent)
    window = next(w for w in (data.streams[(0, "i2v")].next() for _ in range(8)) if w["chunk_index"] == 0)
    later = next(w for w in (data.streams[(0, "i2v")].next() for _ in range(8)) if w["chunk_index"] > 0)
    text = TextSide("tiny-random", 64, cache)
    i2v, t2v = (_batch([window, later], text, config, task) for task in ("i2v", "t2v"))
    # I2V: the first frame's latent is the clean condition (history, timestep 0, outside the loss)
    assert [h.shape[0] for h in i2v.histories] == [1, later["history"].shape[0]] and i2v.chunk.shape[1] == 2
    assert torch.equal(i2v.histories[0][0], window["history"][0]) and i2v.chunk_mask is None
    # T2V: no start frame; a clip's first chunk is generated with it (3 latents, all noised, all in the loss)
    assert [h.shape[0] for h in t2v.histories] == [0, later["history"].shape[0]] and t2v.chunk_starts[0] == 0
    assert torch.equal(t2v.chunk[0, 0], window["history"][0])
    assert t2v.chunk_mask.tolist() == [[True] * 3, [True, True, False]]
    assert task_window(later, "t2v") is later and task_window(window, "i2v") is window
    # each task's own event text, the same (empty) action description
    assert i2v.contexts[0].shape == t2v.contexts[0].shape  # the event set trains both on its event text
    assert i2v.task == "i2v" and t2v.sets == ["event", "event"]


def test_tasks_no_sample_trains_are_dropped_with_a_note(sets):
    path = write_mixture(sets["out"] / "wrong.yaml", [
        MixtureSource("synthetic", sets["out"] / "synthetic", 1.0, ("t2v", "i2v")),
    ])
    notes = []
    data = MixtureWindows.open(path, load_config("cpu", TINY).data, log=notes.append)
    assert data.schedule == ("t2v",) and [s.tasks for s in data.sources] == [("t2v",)]
    assert "none of its samples trains i2v" in notes[0] and "schedule t2v/i2v becomes t2v" in notes[1]


def test_shares_the_samples_cannot_give_stop_the_run_in_one_line(sets):
    # the file says synthetic trains both tasks, its samples train T2V only: 0.7 of the windows cannot come from the
    # T2V half of the steps
    path = write_mixture(sets["out"] / "too_much.yaml", [
        MixtureSource("synthetic", sets["out"] / "synthetic", 0.7, ("t2v", "i2v")),
        MixtureSource("event", sets["out"] / "event", 0.3, ("t2v", "i2v")),
    ])
    with pytest.raises(InfeasibleShares) as e:
        MixtureWindows.open(path, load_config("cpu", TINY).data, log=_silent)
    assert str(e.value).startswith("set synthetic trains t2v only, which is 0.5 of the steps (t2v/i2v): its share "
                                   "can be at most 0.5 (asked 0.7)")
    assert "(of what the samples train: set synthetic" in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------ training


def test_a_mixture_run_trains_both_tasks_and_logs_every_step(sets, cache, tmp_path):
    run = tmp_path / "run"
    summary = _train(sets["mixture"], run, cache, 12)
    rows = _rows(run)
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert [r["task"] for r in rows] == ["t2v", "i2v"] * 6
    for r in rows:
        assert r["windows"] == 4 == sum(r["sets"].values()) and np.isfinite(r["loss"]) and r["lr"] > 0
        assert set(r["loss_by_set"]) == set(r["sets"]) and r["seconds"] > 0
        if r["task"] == "i2v":
            assert "synthetic" not in r["sets"]  # the synthetic set trains T2V only
    counts = {}
    for r in rows:
        for name, n in r["sets"].items():
            counts[f"{name}/{r['task']}"] = counts.get(f"{name}/{r['task']}", 0) + n
    # the unlabelled sets trained (with an empty action description)
    assert counts.get("synthetic/t2v", 0) > 0 and counts.get("event/i2v", 0) + counts.get("event/t2v", 0) > 0
    # realised shares are exactly the sampler's for this seed and these steps
    expected = MixtureSampler(read_mixture(sets["mixture"]), seed=0).simulate(12, 4)
    assert {k: v / 48 for k, v in counts.items()} == pytest.approx(expected["sets_by_task"])
    assert summary["realized"] == pytest.approx(expected["realized"])
    assert summary["requested"] == pytest.approx({"real_world": 0.5, "synthetic": 0.3, "event": 0.2})
    # in the long run every set gets its weight's share: synthetic (T2V only) takes 0.6 of the T2V windows for its
    # 0.3, and real_world and event keep their 5:2 on both tasks (T2V 2/7 and 0.8/7, I2V 5/7 and 2/7)
    assert summary["expected"] == pytest.approx(summary["requested"], abs=1e-12)
    weights = MixtureSampler(read_mixture(sets["mixture"])).task_shares()
    assert weights == {"t2v": pytest.approx({"real_world": 2 / 7, "synthetic": 0.6, "event": 0.8 / 7}),
                       "i2v": pytest.approx({"real_world": 5 / 7, "event": 2 / 7})}
    assert set(summary["tasks"]) == {"t2v", "i2v"} and summary["tasks"]["i2v"]["steps"] == 6
    assert (run / LOSS_PLOT).read_bytes()[:4] == b"\x89PNG"
    state = ckpt.read_state(ckpt.resolve(run))
    assert state["mixture"] == str(sets["mixture"]) and state["shards"].endswith("real_world")
    assert set(state["data"]["streams"]) == {"real_world/t2v", "real_world/i2v", "synthetic/t2v", "event/t2v",
                                             "event/i2v"}
    # the trained model rolls out in both tasks: T2V from text, I2V from the first frame of a training clip
    report = check_checkpoint(run, chunks=4, steps=1, modes=("tscm", "full"), first=1, last=4, repeats=0,
                              log=_silent)
    assert set(report["tasks"]) == {"t2v", "i2v"} and report["tasks"]["i2v"]["start"].startswith("first frame of")
    assert [len(report["tasks"][t]["modes"]["tscm"]) for t in ("t2v", "i2v")] == [4, 4]
    assert (run / "infer-check" / "rollout_t2v_tscm.mp4").is_file() and "passed" in report["verdict"]


def test_a_resumed_run_continues_exactly(sets, cache, tmp_path):
    settings = {"checkpoint_every": 3}
    straight = tmp_path / "straight"
    _train(sets["mixture"], straight, cache, 5, settings=settings)
    expected = _rows(straight)
    resumed = tmp_path / "resumed"
    shutil.copytree(ckpt.step_dir(straight, 3), ckpt.step_dir(resumed, 3))
    (resumed / "checkpoints" / ckpt.LATEST).write_text("step-0000003\n")
    (resumed / METRICS_LOG).write_text("".join(json.dumps(r) + "\n" for r in expected))  # steps 4-5 are redone
    summary = _train(sets["mixture"], resumed, cache, 5, settings=settings)
    rows = _rows(resumed)
    assert summary["steps"] == 5 and [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    for a, b in zip(rows[3:], expected[3:]):
        assert (a["task"], a["sets"]) == (b["task"], b["sets"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
        assert a["loss_by_set"] == pytest.approx(b["loss_by_set"], rel=1e-5, abs=1e-7)


def test_one_shard_folder_still_trains(sets, cache, tmp_path):
    notes = []
    summary = train(sets["out"] / "synthetic", load_config("cpu", TINY), tmp_path / "syn", steps=3,
                    action_cache=cache, device="cpu", log=notes.append)
    rows = _rows(tmp_path / "syn")
    assert [r["task"] for r in rows] == ["t2v"] * 3 and all(r["sets"] == {"synthetic": 4} for r in rows)
    assert summary["notes"] and any("schedule t2v/i2v becomes t2v" in n for n in notes)
    train(sets["out"] / "real_world", load_config("cpu", TINY), tmp_path / "rw", steps=2, action_cache=cache,
          device="cpu", log=_silent)
    assert [r["task"] for r in _rows(tmp_path / "rw")] == ["t2v", "i2v"]


def test_in_memory_windows_follow_the_schedule():
    windows = [{"tasks": ["t2v"], "n": 0}, {"tasks": ["t2v", "i2v"], "n": 1}, {"n": 2}, {"tasks": ["t2v"], "n": 3}]
    stream = StreamWindows(windows, ("i2v",))
    draw = stream.step(0, 2)
    assert draw.task == "i2v" and [w["n"] for w in draw.windows] == [1, 2] and draw.sets == ["windows"] * 2


def test_cli_trains_a_mixture(sets, cache, tmp_path):
    from pipelines.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))  # JSON is YAML
    run = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(main, ["train", "--mixture", str(sets["mixture"]), "-o", str(run), "--steps", "4",
                               "--config", str(config), "--action-cache", str(cache), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert [r["task"] for r in _rows(run)] == ["t2v", "i2v"] * 2
    assert "t2v: 2 steps" in res.output and "i2v: 2 steps" in res.output and "weight 50%" in res.output
    res = runner.invoke(main, ["train", "-o", str(run)])
    assert res.exit_code == 2 and "--mixture" in res.output
    res = runner.invoke(main, ["train", "--shards", str(sets["out"] / "event"), "-o", str(tmp_path / "x"),
                               "--schedule", "i2v,v2v", "--config", str(config)])
    assert res.exit_code == 2 and "schedule" in res.output
