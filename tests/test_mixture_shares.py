"""Weights mean shares: the per-task weights the sampler draws with give every set its weight's share of the
samples whatever tasks it trains, they are the one most even solution, impossible shares fail in one line with the
bound, and `mix info --simulate` shows requested against realised shares per set and per task."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.optimize import linprog

from yume_core.mixture import InfeasibleShares, MixtureSampler, MixtureSource, task_weights, write_mixture

DEMO = {"real_world": (0.5, "t2v+i2v"), "synthetic": (0.25, "t2v"), "event": (0.25, "t2v+i2v")}
# a second Sekai-like set and a set of existing shards beside the three
FIVE = {"real_world": (0.3, "t2v+i2v"), "synthetic": (0.2, "t2v"), "event": (0.2, "t2v+i2v"),
        "sekai_2": (0.15, "t2v+i2v"), "shards": (0.15, "t2v+i2v")}


def _sources(spec: dict, paths: dict | None = None) -> list[MixtureSource]:
    return [MixtureSource(name, (paths or {}).get(name, name), w, tuple(tasks.split("+")))
            for name, (w, tasks) in spec.items()]


def _shares(spec: dict) -> dict[str, float]:
    total = sum(w for w, _ in spec.values())
    return {name: w / total for name, (w, _) in spec.items()}


# ------------------------------------------------------------------------------------------------ the solution


def test_the_demo_gets_its_weights_as_shares():
    sampler = MixtureSampler(_sources(DEMO))
    # synthetic trains T2V only: its 0.25 of the samples is half the T2V ones; real_world and event keep their 2:1
    # on both tasks (the old draw, by plain weight per task, gave synthetic 0.125 and real_world 0.579)
    assert sampler.task_shares()["t2v"] == pytest.approx({"real_world": 1 / 3, "synthetic": 1 / 2, "event": 1 / 6})
    assert sampler.task_shares()["i2v"] == pytest.approx({"real_world": 2 / 3, "event": 1 / 3})
    assert sampler.expected() == pytest.approx(_shares(DEMO), abs=1e-12)
    sim = sampler.simulate(20_000)
    assert sim["realized"] == pytest.approx(_shares(DEMO), abs=0.02)
    assert sim["tasks"] == {"i2v": 0.5, "t2v": 0.5}
    for task, weights in sim["task_weights"].items():
        assert sim["realized_by_task"][task] == pytest.approx(weights, abs=0.02)


def test_five_sets_get_their_weights_as_shares():
    sim = MixtureSampler(_sources(FIVE), seed=3).simulate(20_000)
    assert sim["realized"] == pytest.approx(_shares(FIVE), abs=0.02)
    assert "synthetic" not in sim["task_weights"]["i2v"]
    # every set that trains both tasks is drawn in the same ratio on both: 0.3 : 0.2 : 0.15 : 0.15
    for task in ("t2v", "i2v"):
        w = sim["task_weights"][task]
        assert [w[n] / w["real_world"] for n in ("event", "sekai_2", "shards")] == pytest.approx([2 / 3, 0.5, 0.5])


def test_sets_that_train_every_task_are_drawn_by_their_weights_on_every_task():
    spec = {"a": (2.0, "t2v+i2v"), "b": (1.0, "t2v+i2v"), "c": (1.0, "t2v+i2v")}
    weights = task_weights(_sources(spec), ("t2v", "i2v", "i2v"))
    for w in weights.values():
        assert w == pytest.approx([0.5, 0.25, 0.25])


def test_the_schedule_sets_how_much_room_each_task_has():
    # synthetic asks 0.6: more than the T2V half of t2v/i2v, less than the T2V two thirds of t2v/t2v/i2v
    spec = {"real_world": (0.25, "t2v+i2v"), "synthetic": (0.6, "t2v"), "event": (0.15, "t2v+i2v")}
    with pytest.raises(InfeasibleShares):
        MixtureSampler(_sources(spec))
    sampler = MixtureSampler(_sources(spec), ("t2v", "t2v", "i2v"))
    assert sampler.expected() == pytest.approx(_shares(spec), abs=1e-12)
    assert sampler.simulate(20_000)["realized"] == pytest.approx(_shares(spec), abs=0.02)


def test_shares_on_their_bound_use_every_step_of_their_tasks():
    # real_world and synthetic ask for exactly the T2V steps: T2V draws only them, I2V only event
    spec = {"real_world": (0.3, "t2v"), "synthetic": (0.2, "t2v"), "event": (0.5, "t2v+i2v")}
    weights = task_weights(_sources(spec), ("t2v", "i2v"))
    assert weights["t2v"].tolist() == pytest.approx([0.6, 0.4, 0.0]) and weights["t2v"][2] == 0.0
    assert weights["i2v"].tolist() == [0.0, 0.0, 1.0]
    # close to the bound the solution is still exact
    spec["event"] = (0.5 + 1e-7, "t2v+i2v")
    sampler = MixtureSampler(_sources(spec))
    assert sampler.expected() == pytest.approx(_shares(spec), abs=1e-12)


def test_the_per_task_weights_are_the_one_most_even_solution_and_match_an_lp_on_feasibility():
    """Random mixtures: feasible exactly when a linear program finds per-task weights; when feasible, every share
    is met, each task's weights sum to 1, and sets are drawn in one ratio on every task that draws them both
    (the form of the maximum-entropy solution, which makes it unique)."""
    rng = np.random.default_rng(0)
    kinds = [("t2v",), ("i2v",), ("t2v", "i2v")]
    checked = {True: 0, False: 0}
    for _ in range(300):
        n = int(rng.integers(1, 7))
        sources = [MixtureSource(f"s{i}", "x", float(rng.random()) if rng.random() < 0.9 else 0.0,
                                 kinds[rng.integers(3)]) for i in range(n)]
        if not sum(s.weight for s in sources) > 0:
            continue
        schedule = [("t2v", "i2v"), ("t2v", "t2v", "i2v"), ("t2v", "i2v", "i2v", "i2v")][rng.integers(3)]
        p = np.array([s.weight for s in sources]) / sum(s.weight for s in sources)
        f = np.array([schedule.count(t) / len(schedule) for t in ("t2v", "i2v")])
        edges = [(i, j) for i, s in enumerate(sources) for j, t in enumerate(("t2v", "i2v")) if t in s.tasks]
        if {j for i, j in edges if p[i] > 0} != {0, 1}:
            continue  # a task of the schedule no set trains: a different error
        a_eq = np.zeros((n + 2, len(edges)))
        for k, (i, j) in enumerate(edges):
            a_eq[i, k], a_eq[n + j, k] = 1, 1
        lp = linprog(np.zeros(len(edges)), A_eq=a_eq, b_eq=np.concatenate([p, f]), bounds=(0, None),
                     method="highs")
        try:
            weights = task_weights(sources, schedule)
        except InfeasibleShares:
            assert lp.status == 2, (sources, schedule)
            checked[False] += 1
            continue
        assert lp.status == 0, (sources, schedule)
        checked[True] += 1
        plan = np.stack([f[0] * weights["t2v"], f[1] * weights["i2v"]], axis=1)
        assert plan.sum(axis=1) == pytest.approx(p, abs=1e-12)
        assert [w.sum() for w in weights.values()] == pytest.approx([1, 1], abs=1e-12)
        both = plan[(plan > 1e-12).all(axis=1)]
        if len(both):
            assert both[:, 0] / both[:, 1] == pytest.approx(np.full(len(both), both[0, 0] / both[0, 1]), rel=1e-9)
    assert checked[True] > 50 and checked[False] > 50


def test_the_same_mixture_always_draws_the_same():
    a, b = MixtureSampler(_sources(FIVE), seed=7), MixtureSampler(_sources(FIVE), seed=7)
    assert {t: w.tolist() for t, w in a.weights.items()} == {t: w.tolist() for t, w in b.weights.items()}
    # a draw is a function of (seed, step) alone: a resumed run draws what an uninterrupted one drew
    assert [a.draw(s, 4) for s in range(50)] == [b.draw(s, 4) for s in reversed(range(50))][::-1]


# ------------------------------------------------------------------------------------------------ impossible


@pytest.mark.parametrize("spec, schedule, message", [
    ({"real_world": (0.3, "t2v+i2v"), "synthetic": (0.7, "t2v")}, ("t2v", "i2v"),
     "set synthetic trains t2v only, which is 0.5 of the steps (t2v/i2v): its share can be at most 0.5 "
     "(asked 0.7); lower its weight or give t2v more of the schedule"),
    ({"real_world": (0.5, "t2v"), "synthetic": (0.25, "t2v"), "event": (0.25, "t2v+i2v")}, ("t2v", "i2v", "i2v"),
     "sets real_world and synthetic train t2v only, which is 0.333 of the steps (t2v/i2v/i2v): their shares can "
     "add up to at most 0.333 (asked 0.75); lower their weights or give t2v more of the schedule"),
    (DEMO, ("i2v",), "set synthetic trains no task of the schedule (i2v): its share can be at most 0 (asked 0.25); "
     "set its weight to 0 or add its tasks to it"),
])
def test_impossible_shares_fail_in_one_line_with_the_bound(spec, schedule, message):
    with pytest.raises(InfeasibleShares) as e:
        MixtureSampler(_sources(spec), schedule)
    assert str(e.value) == message


# ------------------------------------------------------------------------------------------------ mix info


@pytest.fixture(scope="module")
def five_sets(tmp_path_factory):
    """A five-set mixture file over small sets (the two extra sets read the folders of real_world and event)."""
    from pipelines.sample_mixture import make_sample_mixture

    root = tmp_path_factory.mktemp("five")
    make_sample_mixture(root, clips=2, clip_frames=24, clip_size=(32, 18), videos=2, video_frames=9,
                        video_size=(16, 16))
    out = root / "out"
    paths = {"real_world": out / "real_world", "synthetic": out / "synthetic", "event": out / "event",
             "sekai_2": out / "real_world", "shards": out / "event"}
    return write_mixture(out / "five.yaml", _sources(FIVE, paths))


def test_mix_info_simulates_the_five_sets_shares(five_sets):
    from pipelines.cli import main

    result = CliRunner().invoke(main, ["mix", "info", str(five_sets), "--simulate", "20000", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    sim = info["simulation"]
    assert sim["requested"] == pytest.approx(_shares(FIVE))
    assert sim["realized"] == pytest.approx(_shares(FIVE), abs=0.02)
    assert info["task_weights"] == sim["task_weights"] and set(sim["realized_by_task"]) == {"t2v", "i2v"}
    for task, weights in sim["task_weights"].items():
        assert sum(weights.values()) == pytest.approx(1) and sim["realized_by_task"][task] == pytest.approx(
            weights, abs=0.02)
    table = CliRunner().invoke(main, ["mix", "info", str(five_sets), "--simulate", "2000"]).output
    assert "per-task weights" in table and "requested" in table and "realized" in table
    assert any(line.split()[:2] == ["synthetic", "t2v"] and line.split()[2] == "0.400" for line in
               table.splitlines())  # 0.2 of the samples is 0.4 of the T2V half


def test_mix_info_refuses_impossible_shares_in_one_line(five_sets):
    from pipelines.cli import main

    result = CliRunner().invoke(main, ["mix", "info", str(five_sets), "--schedule", "t2v,i2v,i2v,i2v,i2v,i2v"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "set synthetic trains t2v only, which is 0.167 of the steps" in result.output
    assert "its share can be at most 0.167 (asked 0.2)" in result.output
