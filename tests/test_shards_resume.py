"""Resume: a rerun rewrites exactly the shards that are not done (tar AND index part), and nothing else."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

import shards

from shards import (
    ShardConfig,
    index_part_path,
    merge_index,
    plan_shards,
    shard_done,
    shard_name,
    verify_shards,
    write_shard_part,
    write_shards,
)
from test_shards_helpers import make_manifest

PROV = {"created": "2026-01-01T00:00:00+00:00"}


def _mtimes(out):
    """mtime per file, with the inode: an atomic rewrite (temp file + rename) changes both."""
    return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def test_rerun_rewrites_only_missing_pieces(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=6, bad_rows=True)
    cfg = ShardConfig(max_count=2)
    out = tmp_path / "out"
    first = write_shards(t, out, cfg, PROV)
    assert len(list(out.glob("*.tar"))) == 3
    before = _mtimes(out)

    (out / shard_name(1, cfg)).unlink()  # tar gone: shard 1 is not done
    index_part_path(out, 2, cfg).unlink()  # part gone: shard 2 is not done (its tar may be partial)
    (out / ".tmp-deadbeef-shard-000000.tar").write_bytes(b"left by a killed run")
    assert [shard_done(out, i, cfg) for i in range(3)] == [True, False, False]

    again = write_shards(t, out, cfg, PROV)
    after = _mtimes(out)
    assert after["shard-000000.tar"] == before["shard-000000.tar"]
    assert after["_index/shard-000000.parquet"] == before["_index/shard-000000.parquet"]
    assert after["shard-000001.tar"] != before["shard-000001.tar"]
    assert after["shard-000002.tar"] != before["shard-000002.tar"]  # rewritten although its tar existed
    assert after["_index/shard-000002.parquet"] != before["_index/shard-000002.parquet"]
    # same rows, same names, same bytes (created is fixed, so even the json is identical)
    assert again.equals(first)
    assert verify_shards(out).ok

    # nothing missing: a third run touches nothing but the merged index
    write_shards(t, out, cfg, PROV)
    third = _mtimes(out)
    assert {k: v for k, v in third.items() if k != "index.parquet"} == {
        k: v for k, v in after.items() if k != "index.parquet"}


def test_changed_plan_rewrites_stale_shards(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=4, bad_rows=False)
    out = tmp_path / "out"
    write_shards(t, out, ShardConfig(max_count=2), PROV)
    before = _mtimes(out)
    index = write_shards(t, out, ShardConfig(max_count=3), PROV)  # shard 0 now holds 3 rows
    after = _mtimes(out)
    assert after["shard-000000.tar"] != before["shard-000000.tar"]
    assert index["shard"].to_pylist() == ["shard-000000.tar"] * 3 + ["shard-000001.tar"]
    assert verify_shards(out).ok


def test_other_inputs_or_settings_rewrite_same_named_shards(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=4, bad_rows=False)
    out = tmp_path / "out"
    cfg = ShardConfig(max_count=2)
    write_shards(t, out, cfg, {**PROV, "actions": {"stride": 1}})
    m0 = _mtimes(out)
    # another number of reader threads or another creation time: same bytes, nothing rewritten
    write_shards(t, out, ShardConfig(max_count=2, threads=1), {"created": "2027-01-01", "actions": {"stride": 1}})
    m1 = _mtimes(out)
    assert all(m1[k] == m0[k] for k in m0 if k.endswith(".tar"))
    # another stride in the provenance: every shard is rewritten with it
    write_shards(t, out, cfg, {**PROV, "actions": {"stride": 2}})
    m2 = _mtimes(out)
    assert all(m2[k] != m1[k] for k in m1 if k.endswith(".tar"))
    # one clip's caption changed: only its shard is rewritten
    caps = t["caption"].to_pylist()
    caps[3] = "a new caption"
    t2 = t.set_column(t.schema.get_field_index("caption"), "caption", pa.array(caps))
    write_shards(t2, out, cfg, {**PROV, "actions": {"stride": 2}})
    m3 = _mtimes(out)
    assert m3["shard-000000.tar"] == m2["shard-000000.tar"] and m3["shard-000001.tar"] != m2["shard-000001.tar"]
    # (the manifest's labels were made at stride 1, so verify rightly flags a stride-2 provenance on every sample)
    rep = verify_shards(out)
    assert len(rep.errors) == 4 and all("at stride 2" in msg for _, _, msg in rep.errors)


def test_flow_style_parallel_parts_then_merge(tmp_path):
    """What a Prefect flow does: plan, one write_shard_part per shard (any order), merge."""
    t = make_manifest(tmp_path / "in", n_ok=5, bad_rows=True)
    cfg = ShardConfig(max_count=2)
    ok = t.filter(pa.compute.equal(t["status"], "ok"))
    groups = plan_shards(ok, cfg)
    out = tmp_path / "out"
    for i in reversed(range(len(groups))):
        write_shard_part(ok.take(pa.array(groups[i])), out, i, cfg, PROV)
        assert shard_done(out, i, cfg, rows=ok.take(pa.array(groups[i])), provenance=PROV)
    assert not shard_done(out, 0, cfg, rows=ok.take(pa.array(groups[1])), provenance=PROV)  # other rows: stale
    assert not shard_done(out, 0, cfg, rows=ok.take(pa.array(groups[0])), provenance={"actions": {"stride": 2}})
    index = merge_index(out, len(groups), cfg)
    assert index.equals(pq.read_table(out / "index.parquet"))
    assert index["clip_id"].to_pylist() == ok["clip_id"].to_pylist()
    assert index.equals(merge_index(out))  # discovering the parts gives the same
    assert verify_shards(out).ok


def test_a_smaller_plan_removes_the_shards_of_a_larger_one(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=5, bad_rows=False, extra_captions=False)
    out = tmp_path / "out"
    shards.write_shards(t, out, shards.ShardConfig(max_count=1))
    assert len(list(out.glob("*.tar"))) == 5
    index = shards.write_shards(t, out, shards.ShardConfig(max_count=2))
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert sorted(p.name for p in (out / "_index").glob("*.parquet")) == [
        "shard-000000.parquet", "shard-000001.parquet", "shard-000002.parquet"]
    assert index.num_rows == 5 and shards.verify_shards(out).ok
