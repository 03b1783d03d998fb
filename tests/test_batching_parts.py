"""Parts: a manifest held as files, read by row range, by position and a column at a time; streamed back into one."""

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import pipelines.batching as batching
from pipelines.batching import Parts, fingerprint, write_parts
from yume_core.manifest import write_manifest


def _table(n: int, start: int = 0) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table({"clip_id": [f"c{i:04d}" for i in ids], "status": ["ok" if i % 3 else "failed" for i in ids],
                     "reason": [None if i % 3 else "x" for i in ids], "keys": [["W"] * (i % 5) for i in ids]})


def _parts(tmp_path, sizes) -> tuple[Parts, pa.Table]:
    start = 0
    for i, n in enumerate(sizes):
        write_manifest(_table(n, start), tmp_path / f"part-{i:05d}.parquet")
        start += n
    paths = [tmp_path / f"part-{i:05d}.parquet" for i in range(len(sizes))]
    whole = pa.concat_tables([pq.read_table(p) for p in paths], promote_options="permissive")  # the one-shot way
    return Parts.of_files(paths), whole


def test_rows_by_range_and_position_match_the_concatenated_table(tmp_path):
    parts, whole = _parts(tmp_path, [4, 4, 3])
    assert parts.num_rows == whole.num_rows == 11 and parts.starts == (0, 4, 8, 11)
    assert parts.read_range(2, 9).to_pylist() == whole.slice(2, 7).to_pylist()
    positions = np.array([1, 3, 4, 9, 10])
    assert parts.take(positions).to_pylist() == whole.take(pa.array(positions)).to_pylist()
    assert parts.columns(["clip_id"]).column_names == ["clip_id"]
    assert parts.summarize()["in"] == 11 and parts.summarize()["failed"] == 4
    assert fingerprint(parts, {"a": 1}, ("clip_id", "keys")) == fingerprint(whole, {"a": 1}, ("clip_id", "keys"))


def test_a_missing_column_reads_as_nulls_of_the_unified_type(tmp_path):
    write_manifest(pa.table({"clip_id": ["a"], "status": ["ok"]}), tmp_path / "p0.parquet")
    write_manifest(pa.table({"clip_id": ["b"], "status": ["ok"], "caption_event": ["text"]}), tmp_path / "p1.parquet")
    parts = Parts.of_files([tmp_path / "p0.parquet", tmp_path / "p1.parquet"])
    assert parts.read_range(0, 2)["caption_event"].to_pylist() == [None, "text"]


def test_streamed_manifest_is_the_one_shot_file_within_one_row_group(tmp_path):
    parts, whole = _parts(tmp_path, [5, 5, 2])
    write_parts(parts, tmp_path / "streamed.parquet", parts.schema, {"k": "v"})
    write_manifest(whole, tmp_path / "oneshot.parquet", {"k": "v"})
    digest = [hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in ("streamed.parquet", "oneshot.parquet")]
    assert digest[0] == digest[1]


def test_large_manifests_get_bounded_row_groups_and_read_back_whole(tmp_path, monkeypatch):
    parts, whole = _parts(tmp_path, [5, 5, 5, 2])
    monkeypatch.setattr(batching, "ROW_GROUP_ROWS", 4)
    write_parts(parts, tmp_path / "m.parquet", parts.schema)
    meta = pq.read_metadata(tmp_path / "m.parquet")
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [4, 4, 4, 4, 1]
    assert pq.read_table(tmp_path / "m.parquet").to_pylist() == whole.to_pylist()
    single = Parts.of_files([tmp_path / "m.parquet"])  # one file, read by row group
    assert single.read_range(3, 10).to_pylist() == whole.slice(3, 7).to_pylist()
    assert sum(t.num_rows for t in single.iter_tables(["status"])) == 17



def test_a_batch_key_sits_beside_its_part_and_not_in_it(tmp_path):
    """Parts remember the identities (mtimes) of the files their batch read, to resume; the part itself, and the
    manifest merged from parts, must not hold them, or the same rows from regenerated inputs would be other bytes."""
    digests = []
    for key in ("1234:111", "1234:222"):  # the same file at two modification times
        folder = tmp_path / key.replace(":", "-")
        folder.mkdir()
        part = folder / "part-00000.parquet"
        batching.write_batch(lambda t: t, _table(4), str(part), key=key)
        plan = batching.BatchPlan(folder, 4, 4)
        assert plan.done(0, key) and not plan.done(0, "1234:333") and plan.done(0)
        parts = Parts.of_files([part])
        write_parts(parts, folder / "manifest.parquet", parts.schema, {"k": "v"})
        digests.append((hashlib.sha256(part.read_bytes()).hexdigest(),
                        hashlib.sha256((folder / "manifest.parquet").read_bytes()).hexdigest()))
    assert digests[0] == digests[1]
