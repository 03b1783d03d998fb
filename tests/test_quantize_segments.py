"""Constant-label runs and fixed chunks on hand-made label sequences with known answers."""

import numpy as np
import pytest

from quantize_actions import (
    KEY_LABELS,
    MOUSE_LABELS,
    BatchLabels,
    QuantizeConfig,
    chunks,
    load_vocabulary,
    segment_runs,
    segments,
)
from yume_core.manifest import SEGMENT_TYPE


def codes(*runs) -> tuple[np.ndarray, np.ndarray]:
    """codes(("W", "·", 40), ("A", "→", 3)) -> key and mouse code arrays."""
    keys = np.concatenate([[KEY_LABELS.index(k)] * n for k, _, n in runs]).astype(np.uint8)
    mouse = np.concatenate([[MOUSE_LABELS.index(m)] * n for _, m, n in runs]).astype(np.uint8)
    return keys, mouse


def seg(start, end, keys, mouse, agreement=1.0, vocabulary="yume15"):
    phrase = load_vocabulary(vocabulary).phrase(keys, mouse)
    return {"start_frame": start, "end_frame": end, "keys": keys, "mouse": mouse, "agreement": agreement,
            "phrase": phrase}


def test_spans_are_worded_by_the_configured_vocabulary():
    codes_ = codes(("W+A", "←", 40))
    assert segments(*codes_)[0]["phrase"] == (
        "First-person perspective. The camera pushes forward and moves to the left (W+A). "
        "The camera pans to the left (←)."
    )
    yume10 = QuantizeConfig(vocabulary="yume10")
    assert segments(*codes_, yume10) == [seg(0, 40, "W+A", "←", vocabulary="yume10")]
    assert chunks(*codes(("None", "·", 40)), yume10)[0]["phrase"] == load_vocabulary("yume10").prefix  # still: no words


def test_min_length_boundary_33_frames():
    assert segments(*codes(("W", "·", 32))) == [seg(0, 32, "W", "·")]  # 32 steps = frames 0..32 = 33 frames
    assert segments(*codes(("W", "·", 31))) == []  # 32 frames
    assert segments(*codes(("W", "·", 31)), QuantizeConfig(min_segment_frames=32)) == [seg(0, 31, "W", "·")]


def test_runs_split_on_keys_or_mouse_and_keep_frame_numbers():
    keys, mouse = codes(("W+A", "←", 40), ("W", "←", 10), ("W", "↑→", 35), ("None", "·", 33))
    assert segments(keys, mouse) == [
        seg(0, 40, "W+A", "←"),  # steps 0..39
        seg(50, 85, "W", "↑→"),  # steps 50..84; the 10-step W/← run (11 frames) is too short
        seg(85, 118, "None", "·"),  # consecutive runs share their boundary frame, as in Yume's files
    ]
    assert [tuple(d) for d in segments(keys, mouse)] == [tuple(SEGMENT_TYPE.names)] * 3


def test_stride_maps_steps_to_original_frames():
    config = QuantizeConfig(stride=3)
    keys, mouse = codes(("S", "·", 4), ("W", "→", 11), ("W", "·", 10))
    # step i spans frames 3i..3i+3: the 11-step run covers frames 12..45 (34 frames), the 10-step one 31 frames
    assert segments(keys, mouse, config) == [seg(12, 45, "W", "→")]


def test_runs_never_cross_clips_in_a_batch():
    k1, m1 = codes(("W", "·", 20))
    k2, m2 = codes(("W", "·", 40))
    labels = BatchLabels(np.concatenate([k1, k2, k1]), np.concatenate([m1, m2, m1]), np.array([0, 20, 60, 60, 80]))
    spans = segment_runs(labels, QuantizeConfig(min_segment_frames=21))
    # clip 2 has no steps; without the clip boundaries this would be one 80-step run
    assert [spans.to_dicts(c) for c in range(4)] == [
        [seg(0, 20, "W", "·")], [seg(0, 40, "W", "·")], [], [seg(0, 20, "W", "·")]
    ]


def test_chunks_stride1_membership_majority_and_agreement():
    # 70 steps = 71 frames -> chunks [0, 31] and [32, 63]; frames 64..70 make a partial chunk, dropped
    keys, mouse = codes(("W", "·", 20), ("None", "→", 11), ("A", "←", 1), ("S", "↓", 16), ("S", "↑", 15), ("W", "·", 7))
    got = chunks(keys, mouse)
    assert [(c["start_frame"], c["end_frame"]) for c in got] == [(0, 31), (32, 63)]
    # chunk 0 = steps 0..30 (step 31, frames 31->32, bridges two chunks): 20 W/·, 11 None/→
    assert (got[0]["keys"], got[0]["mouse"]) == ("W", "·")
    assert got[0]["agreement"] == pytest.approx(20 / 31)
    # chunk 1 = steps 32..62: 16 S/↓ (32..47), 15 S/↑ (48..62); keys S everywhere, mouse majority ↓
    assert (got[1]["keys"], got[1]["mouse"]) == ("S", "↓")
    assert got[1]["agreement"] == pytest.approx(16 / 31)


def test_chunk_ties_go_to_the_smallest_code():
    keys, mouse = codes(("A", "←", 15), ("D", "→", 15), ("W", "·", 1))  # chunk 0 = steps 0..30
    got = chunks(keys, mouse)
    assert len(got) == 1
    # D (code 3) beats A (code 4); → (code 1) beats ← (code 2); the pair D/→ occurs 15 times
    assert (got[0]["keys"], got[0]["mouse"]) == ("D", "→")
    assert got[0]["agreement"] == pytest.approx(15 / 31)


def test_majority_pair_may_never_occur_together():
    keys, mouse = codes(("W", "←", 16), ("A", "·", 15))
    got = chunks(keys, mouse)
    assert (got[0]["keys"], got[0]["mouse"], got[0]["agreement"]) == ("W", "←", pytest.approx(16 / 31))
    keys, mouse = codes(("W", "·", 10), ("A", "←", 11), ("W", "←", 10))
    got = chunks(keys, mouse)  # keys W (20), mouse ← (21): W/← holds on 10 of 31 steps
    assert (got[0]["keys"], got[0]["mouse"], got[0]["agreement"]) == ("W", "←", pytest.approx(10 / 31))


def test_chunks_with_stride():
    config = QuantizeConfig(stride=2)
    # step i spans frames 2i..2i+2: chunk 0 holds steps 0..14, step 15 (30->32) bridges, chunk 1 holds 16..30
    keys, mouse = codes(("W", "·", 15), ("S", "·", 1), ("A", "·", 15), ("W", "·", 2))  # 33 steps = frames 0..66
    got = chunks(keys, mouse, config)
    assert [(c["start_frame"], c["end_frame"], c["keys"], c["agreement"]) for c in got] == [
        (0, 31, "W", 1.0),
        (32, 63, "A", 1.0),
    ]


def test_too_short_for_a_chunk():
    assert chunks(*codes(("W", "·", 30))) == []  # 31 frames
    assert len(chunks(*codes(("W", "·", 31)))) == 1  # 32 frames


def test_config_rejects_chunks_shorter_than_two_strides():
    with pytest.raises(ValueError, match="chunk_frames"):
        QuantizeConfig(stride=20, chunk_frames=32)
    QuantizeConfig(stride=16, chunk_frames=32)
