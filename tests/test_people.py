"""Where a build's pauses wait: in Prefect only with a server and a flow run; decisions a run received are found by
the next plan, so a rerun does not ask again (the end-to-end runs are in test_prefect_pauses.py)."""

from pipelines.people import accepted, received_before, waits_in_prefect


def test_no_flow_run_means_the_exit_3_pause(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    assert waits_in_prefect() is False  # outside a flow run there is nothing to pause


def test_decisions_received_in_prefect_are_used_by_the_next_plan(tmp_path):
    received = tmp_path / "decisions" / "screening.csv"
    assert received_before("decisions", None, received) == ("decisions", None)  # nothing yet: it waits
    assert received_before("decisions", "given.csv", received) == ("decisions", "given.csv")  # the flag wins
    assert received_before("accept_all", None, received) == ("accept_all", None)
    received.parent.mkdir()
    received.write_text("key,decision\na,keep\n")
    assert received_before("decisions", None, received) == ("decisions", str(received))
    received.unlink()
    accepted(received).write_text("accept_all\n")
    assert received_before("decisions", None, received) == ("accept_all", None)
