"""Planning shards by count and by bytes, and the real tars that follow the plan."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from shards import TAR_TRAILER_BYTES, ShardConfig, estimate_sample_bytes, plan_shards, shard_name, write_shards
from test_shards_helpers import make_manifest


def _table(video_bytes, status=None):
    n = len(video_bytes)
    return pa.table({
        "clip_id": [f"c{i}" for i in range(n)],
        "status": status or ["ok"] * n,
        "video_bytes": pa.array(video_bytes, pa.int64()),
        "video_frames": [30] * n,
        "num_poses": [30] * n,
        "camera_path": [f"/x/c{i}.npz" for i in range(n)],
    })


def _sizes(groups):
    return [len(g) for g in groups]


def test_by_count():
    t = _table([1000] * 7)
    groups = plan_shards(t, ShardConfig(max_count=3))
    assert _sizes(groups) == [3, 3, 1]
    assert np.concatenate(groups).tolist() == list(range(7))
    assert _sizes(plan_shards(t, ShardConfig(max_count=7))) == [7]
    assert _sizes(plan_shards(t, ShardConfig(max_count=1))) == [1] * 7


def test_by_bytes_boundaries_are_exact():
    t = _table([1000, 2000, 3000, 4000, 5000, 6000])
    est = estimate_sample_bytes(t, ShardConfig())
    # per sample: video + json allowance + exact npy + tar headers
    assert est[1] - est[0] == 1000 and (est > t["video_bytes"].to_numpy()).all()
    # budget holds exactly the first two samples: they share a shard, the third opens the next
    limit = int(est[0] + est[1]) + TAR_TRAILER_BYTES
    assert _sizes(plan_shards(t, ShardConfig(max_bytes=limit))) [0] == 2
    # one byte less and the second sample no longer fits
    assert _sizes(plan_shards(t, ShardConfig(max_bytes=limit - 1)))[0] == 1
    # a budget of exactly samples 2+3 and then 4: greedy in order
    limit = int(est[2] + est[3]) + TAR_TRAILER_BYTES
    groups = plan_shards(t, ShardConfig(max_bytes=limit))
    cum = [int(sum(est[g])) + TAR_TRAILER_BYTES for g in groups]
    assert all(c <= limit for c, g in zip(cum, groups) if len(g) > 1)
    # every closed shard would have overflowed with the next sample
    for g, nxt in zip(groups[:-1], groups[1:]):
        assert sum(est[g]) + est[nxt[0]] + TAR_TRAILER_BYTES > limit


def test_oversized_sample_goes_alone():
    t = _table([1000, 1000, 10_000_000, 1000, 1000])
    est = estimate_sample_bytes(t, ShardConfig())
    limit = int(3 * est[0]) + TAR_TRAILER_BYTES
    groups = plan_shards(t, ShardConfig(max_bytes=limit))
    assert [g.tolist() for g in groups] == [[0, 1], [2], [3, 4]]


def test_count_and_bytes_together():
    t = _table([1000] * 10)
    est = estimate_sample_bytes(t, ShardConfig())
    limit = int(4 * est[0]) + TAR_TRAILER_BYTES
    assert _sizes(plan_shards(t, ShardConfig(max_bytes=limit, max_count=3))) == [3, 3, 3, 1]
    assert _sizes(plan_shards(t, ShardConfig(max_bytes=limit, max_count=5))) == [4, 4, 2]


def test_only_ok_rows_and_positions_into_the_table():
    t = _table([1000] * 6, status=["ok", "failed", "ok", "dropped", "ok", "ok"])
    groups = plan_shards(t, ShardConfig(max_count=2))
    assert [g.tolist() for g in groups] == [[0, 2], [4, 5]]
    assert plan_shards(_table([1000], status=["failed"]), ShardConfig()) == []


def test_deterministic_and_estimate_without_poses():
    t = _table(list(range(1000, 1000 + 500 * 40, 500)))
    a = plan_shards(t, ShardConfig(max_bytes=60_000))
    b = plan_shards(t, ShardConfig(max_bytes=60_000))
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    with_poses = estimate_sample_bytes(t, ShardConfig())
    without = estimate_sample_bytes(t, ShardConfig(include_poses=False))
    assert (with_poses - without == 128 + 64 * 30 + 1024).all()


def test_shard_names():
    assert shard_name(0) == "shard-000000.tar"
    assert shard_name(12, ShardConfig(prefix="real")) == "real-000012.tar"
    with pytest.raises(ValueError):
        ShardConfig(prefix="a.b")


def test_written_tars_follow_the_plan_and_stay_under_max_bytes(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=6, bad_rows=True, extra_captions=True)
    est = estimate_sample_bytes(t, ShardConfig())
    ok = [i for i, s in enumerate(t["status"].to_pylist()) if s == "ok"]
    limit = int(est[ok[0]] + est[ok[1]]) + TAR_TRAILER_BYTES + 10  # about two samples per shard
    cfg = ShardConfig(max_bytes=limit)
    groups = plan_shards(t, cfg)
    index = write_shards(t, tmp_path / "out", cfg)
    tars = sorted((tmp_path / "out").glob("*.tar"))
    assert [p.name for p in tars] == [shard_name(i) for i in range(len(groups))]
    for p in tars:
        assert p.stat().st_size <= limit
    got = [index.filter(pa.compute.equal(index["shard"], shard_name(i)))["clip_id"].to_pylist()
           for i in range(len(groups))]
    assert got == [t["clip_id"].take(pa.array(g)).to_pylist() for g in groups]
