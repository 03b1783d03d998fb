"""The Parquet index and `verify_shards`: clean shards pass; corruption, tampering and index drift are caught."""

from __future__ import annotations

import re
import shutil
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shards import INDEX_SCHEMA, ShardConfig, format_report, verify_shards, write_shards
from test_shards_helpers import manifest, ok_rows  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def clean(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    write_shards(manifest, out, ShardConfig(max_count=2), {"actions": {"stride": 1}})
    return out


@pytest.fixture
def copy(clean, tmp_path):
    dst = tmp_path / "shards"
    shutil.copytree(clean, dst)
    return dst


def _member(tar_path, suffix):
    with tarfile.open(tar_path) as tf:
        for m in tf:
            if m.name.endswith(suffix):
                return m
    raise AssertionError(f"no member *{suffix} in {tar_path}")


def _overwrite(path, offset, data: bytes):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_index_schema_order_and_offsets(clean, manifest):
    index = pq.read_table(clean / "index.parquet")
    assert index.schema.equals(INDEX_SCHEMA)
    assert index["clip_id"].to_pylist() == [r["clip_id"] for r in ok_rows(manifest)]
    assert index["shard"].to_pylist() == sorted(index["shard"].to_pylist())
    assert index["position"].to_pylist() == [0, 1, 0, 1, 0]
    # the offset is where the sample's first member starts: a reader can seek there and read it alone
    for entry in index.to_pylist():
        with open(clean / entry["shard"], "rb") as f:
            f.seek(entry["offset"])
            with tarfile.open(fileobj=f, mode="r|") as tf:
                first = next(iter(tf))
        assert first.name == f"{entry['key']}.json"
    # pandas reads it, nested members included
    df = index.to_pandas()
    assert list(df.columns[:6]) == ["key", "shard", "position", "offset", "member_bytes", "members"]
    assert df["members"].iloc[0][1]["ext"] == "mp4"


def test_clean_shards_verify(clean):
    rep = verify_shards(clean)
    assert rep.ok, format_report(rep)
    assert (rep.samples, rep.shards) == (5, 3)
    assert format_report(rep).endswith(": OK")


def test_clean_shards_verify_with_decoding(clean):
    rep = verify_shards(clean, decode=True)
    assert rep.ok, format_report(rep)


def test_corrupted_mp4_member(copy):
    tar = copy / "shard-000001.tar"
    m = _member(tar, ".mp4")
    _overwrite(tar, m.offset_data + m.size // 2, b"\x00\xff\x00\xff")
    rep = verify_shards(copy)
    assert not rep.ok
    assert any(s == tar.name and k == m.name[:-4] and "sha256" in msg for s, k, msg in rep.errors), rep.errors
    assert any(s == tar.name and k is None and msg.startswith("tar's sha256 is")
               for s, k, msg in rep.errors), rep.errors  # the same bytes, seen whole
    assert "2 problem" in format_report(rep)


def test_tampered_json(copy):
    tar = copy / "shard-000000.tar"
    m = _member(tar, ".json")
    with tarfile.open(tar) as tf:
        text = tf.extractfile(m).read()
    assert b'"actions"' in text
    _overwrite(tar, m.offset_data + text.index(b'"actions"'), b'"actionz"')  # same size, field renamed
    msgs = [msg for _, k, msg in verify_shards(copy).errors if k == m.name[:-5]]
    assert any("sha256" in x for x in msgs) and any("missing field 'actions'" in x for x in msgs), msgs


def test_json_consistency_checks(copy):
    """A json whose labels disagree with its frame count, or with a segment past the end, is reported."""
    tar = copy / "shard-000002.tar"
    m = _member(tar, ".json")
    with tarfile.open(tar) as tf:
        text = tf.extractfile(m).read()
    found = re.compile(rb'"frames":(\d+)').search(text, text.index(b'"actions"'))
    old = found.group(0)
    new = b'"frames":' + str(int(found.group(1)) - 9).encode()
    new = new + b" " * (len(old) - len(new))  # keep the size; json allows the space
    _overwrite(tar, m.offset_data + found.start(), new)
    msgs = [msg for _, _, msg in verify_shards(copy).errors]
    assert any("labels;" in x and "stride 1" in x for x in msgs), msgs
    assert any("segments[" in x and "not within" in x for x in msgs), msgs
    assert any("npy is float32" in x for x in msgs), msgs


def test_missing_index_entry_and_missing_sample(copy):
    index = pq.read_table(copy / "index.parquet")
    dropped = index["key"][0].as_py()
    pq.write_table(index.slice(1), copy / "index.parquet")
    errs = verify_shards(copy).errors
    assert (index["shard"][0].as_py(), dropped, "sample is not in the index") in errs

    # now the other way round: the index lists a sample the tar lacks
    pq.write_table(index, copy / "index.parquet")
    tar = copy / "shard-000001.tar"
    gone = index["key"][3].as_py()
    with tarfile.open(tar) as src:
        kept = [(m, src.extractfile(m).read()) for m in src if not m.name.startswith(gone + ".")]
    import io

    with tarfile.open(tar, "w") as dst:
        for m, data in kept:
            dst.addfile(m, io.BytesIO(data))
    errs = verify_shards(copy).errors
    assert (tar.name, gone, "index entry not found in its shard") in errs


def test_truncated_tar_and_missing_shard_and_duplicates(copy):
    tar = copy / "shard-000001.tar"
    with open(tar, "r+b") as f:
        f.truncate(tar.stat().st_size // 2)
    (copy / "shard-000002.tar").unlink()
    shutil.copy(copy / "shard-000000.tar", copy / "extra-000000.tar")  # same samples twice
    rep = verify_shards(copy)
    text = format_report(rep)
    assert any(s == tar.name and k is None and "unreadable" in msg for s, k, msg in rep.errors) or any(
        s == tar.name and "sha256" in msg for s, _, msg in rep.errors), text
    assert ("shard-000002.tar", None, "shard listed in the index is missing") in rep.errors
    assert any("duplicate key" in msg for _, _, msg in rep.errors), text
    assert any(s == "extra-000000.tar" and "index puts this key in shard-000000.tar" in msg
               for s, _, msg in rep.errors), text


def test_no_index(copy):
    (copy / "index.parquet").unlink()
    rep = verify_shards(copy)
    assert not rep.ok and rep.errors[0] == (None, None, f"no index.parquet in {copy}")


def test_failed_rows_in_index_are_not_errors(copy):
    index = pq.read_table(copy / "index.parquet")
    extra = pa.Table.from_pylist([{"key": "gone", "clip_id": "gone", "status": "failed", "reason": "video_missing",
                                   "error": "x", "members": [], "member_bytes": 0}], schema=INDEX_SCHEMA)
    pq.write_table(pa.concat_tables([index, extra]), copy / "index.parquet")
    rep = verify_shards(copy)
    assert rep.ok and rep.failed_rows == 1
    assert "1 input rows failed" in format_report(rep)


def test_a_missing_or_disagreeing_completion_marker_fails(copy):
    """A writer trusts a shard only through its marker: without one it was never finished, and a marker whose
    size, sha256 or sample count differ from the tar describes other bytes."""
    import hashlib
    import json

    def edit(name, **changes):
        marker = copy / "_index" / f"{name}.done.json"
        marker.write_text(json.dumps({**json.loads(marker.read_text()), **changes}))

    (copy / "_index" / "shard-000000.done.json").unlink()
    edit("shard-000001", sha256="0" * 64)
    third = json.loads((copy / "_index" / "shard-000002.done.json").read_text())
    edit("shard-000002", bytes=third["bytes"] + 1, samples=third["samples"] + 1)
    rep = verify_shards(copy)
    found: dict[str, list[str]] = {}
    for shard, key, message in rep.errors:
        assert key is None
        found.setdefault(shard, []).append(message)
    sha = hashlib.sha256((copy / "shard-000001.tar").read_bytes()).hexdigest()
    assert found == {
        "shard-000000.tar": ["no completion marker (_index/shard-000000.done.json): the shard was never finished; "
                             "run the command that wrote it again, which rewrites it"],
        "shard-000001.tar": [f"tar's sha256 is {sha}, its completion marker says {'0' * 64} (changed after it "
                             "was written)"],
        "shard-000002.tar": [f"tar has {third['bytes']} bytes, its completion marker says {third['bytes'] + 1}",
                             f"tar holds {third['samples']} samples, its completion marker says "
                             f"{third['samples'] + 1}"],
    }, format_report(rep)
    assert rep.samples == 5  # the samples themselves are fine
