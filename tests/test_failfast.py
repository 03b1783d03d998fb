"""yume_core.failfast: the first-K rule every model-backed stage shares (synthesis, captioning, scoring)."""

import pickle

import pytest

from yume_core.failfast import FailFast, SystematicFailure


def test_k_failures_of_one_class_stop_the_run_and_every_later_batch():
    watch = FailFast(3, "videos", "check the model")
    watch.record("RuntimeError", "shape '[1, 45, 1, -1]' is invalid")
    watch.record("RuntimeError", "again")
    with pytest.raises(SystematicFailure) as stopped:
        watch.record("RuntimeError", "and again")
    assert str(stopped.value) == ("stopped: the first 3 videos all failed with RuntimeError "
                                  "(shape '[1, 45, 1, -1]' is invalid); check the model")
    with pytest.raises(SystematicFailure):
        watch.check()
    with pytest.raises(SystematicFailure):
        watch.record(None)
    assert pickle.loads(pickle.dumps(stopped.value)).args == stopped.value.args


@pytest.mark.parametrize("first", [None, "ValueError"])
def test_a_success_or_a_second_class_among_the_first_k_lets_the_run_go_on(first):
    watch = FailFast(3)
    watch.record(first, "")
    for _ in range(10):
        watch.record("RuntimeError", "a row's own failure")
    watch.check()


def test_zero_never_stops_and_a_traceback_shows_its_first_and_last_lines():
    never = FailFast(0)
    for _ in range(10):
        never.record("RuntimeError")
    with pytest.raises(SystematicFailure, match=r"\(VBench failed \(exit 1\) \.\.\. RuntimeError: out of memory\)"):
        FailFast(1).record("vbench_failed", "VBench failed (exit 1)\n  File x.py\n  RuntimeError: out of memory\n")


def test_copies_in_one_process_are_one_watch():
    """What a process runner does with the flow's watch: every batch it unpickles shares one count."""
    watch = FailFast(2, "clips")
    a, b = pickle.loads(pickle.dumps(watch)), pickle.loads(pickle.dumps(watch))
    assert a is b is watch
    a.record("caption_bad_request", "HTTP 400")
    with pytest.raises(SystematicFailure, match="first 2 clips"):
        b.record("caption_bad_request", "HTTP 400")
    assert pickle.loads(pickle.dumps(FailFast(2))) is not watch
