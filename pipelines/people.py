"""Waiting for people inside Prefect: a build step that needs decisions (video screening, the review of drafted
event texts) waits for them as the flow run's input when the build reports to a Prefect server.

Without a server (Prefect's embedded mode, a laptop) the build stops with exit status 3 and says how to resume
with `--decisions` / `--text-decisions`: nothing else could hold the run. With a server, people expect the run to
wait where they watch it, so:

- a deployment run (a worker started it, and can start it again) is **suspended** (`suspend_flow_run`): its
  process exits, nothing is held while people screen for days, and when someone resumes it from the UI or the
  API with the decisions, the worker runs the flow again; the finished steps are skipped by their markers and
  the waiting step gets the input (the same pause key returns it);
- any other run against a server (`PREFECT_API_URL` set, the command run by hand) is **paused** in its process
  (`pause_flow_run`), which polls until it is resumed, for at most `YUME_DATA_PAUSE_TIMEOUT` seconds (default one
  day; then the run fails and the next run of the command waits again).

The input is `Decisions`: the decisions CSV as the review pages download it, pasted whole (the UI shows a form
with its description), or `accept_all`. It is written to the build's work folder (`received`), where the next
plan of the build finds it, so a rerun does not ask again and the step's fingerprint covers what was decided.
`YUME_DATA_WAIT_IN_PREFECT=0` keeps the exit-3 pause even with a server.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import Field

from prefect.input import RunInput
from yume_core.storage import atomic_write_text

TIMEOUT_ENV, SWITCH_ENV = "YUME_DATA_PAUSE_TIMEOUT", "YUME_DATA_WAIT_IN_PREFECT"
DEFAULT_PAUSE_TIMEOUT = 24 * 3600


class Decisions(RunInput):
    """What resumes a build waiting for people (the form the Prefect UI shows)."""

    decisions_csv: str = Field("", description="The decisions CSV the review pages downloaded (key,decision,note"
                                               "[,text]), pasted whole.")
    accept_all: bool = Field(False, description="Keep everything without a person's decisions (the card says so).")


def _flow_run():
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx.flow_run if ctx is not None else None


def waits_in_prefect() -> bool:
    """True when the current flow run reports to a Prefect server that can resume it (see the module docstring)."""
    if os.environ.get(SWITCH_ENV, "1") == "0":
        return False
    run = _flow_run()
    if run is None:
        return False
    return run.deployment_id is not None or bool(os.environ.get("PREFECT_API_URL"))


def accepted(received: Path) -> Path:
    """Where a run resumed with `accept_all` says so, beside the decisions it would have received."""
    return received.with_name(received.stem + ".accept_all")


def received_before(policy: str, decisions: str | None, received: Path) -> tuple[str, str | None]:
    """(policy, decisions file) of a step: as configured, or what an earlier run received in Prefect (so a rerun
    does not ask again, and the step's fingerprint covers the decisions)."""
    if policy != "decisions" or decisions:
        return policy, decisions
    if accepted(received).is_file():
        return "accept_all", None
    return policy, str(received) if received.is_file() else None


def wait_for_decisions(key: str, message: str, received: Path) -> str | None:
    """Wait for `Decisions` as the flow run's input under pause `key` (a step's name); returns the path of the CSV
    written to `received`, or "accept_all". None when the run does not wait in Prefect (the caller pauses with exit
    status 3 instead). A suspended deployment run does not return: its process exits until it is resumed."""
    if not waits_in_prefect():
        return None
    from prefect.flow_runs import pause_flow_run, suspend_flow_run
    from prefect.logging import get_run_logger

    get_run_logger().warning(f"waiting for people: {message}. Resume this flow run in the Prefect UI (or with "
                             "`resume_flow_run(id, run_input={...})`) giving decisions_csv, or accept_all.")
    key = re.sub(r"[^a-z0-9-]+", "-", key.lower())  # Prefect's input keys: lower-case letters, digits, dashes
    if _flow_run().deployment_id is not None:
        got = suspend_flow_run(wait_for_input=Decisions, key=key)
    else:
        timeout = int(os.environ.get(TIMEOUT_ENV) or DEFAULT_PAUSE_TIMEOUT)
        got = pause_flow_run(wait_for_input=Decisions, key=key, timeout=timeout, poll_interval=2)
    if got.accept_all:
        atomic_write_text(accepted(received), "accept_all: resumed in Prefect without decisions\n")
        return "accept_all"
    if not got.decisions_csv.strip():
        raise ValueError(f"{key}: the flow run was resumed without decisions; give decisions_csv (the CSV the "
                         "review pages downloaded) or accept_all")
    text = got.decisions_csv if got.decisions_csv.endswith("\n") else got.decisions_csv + "\n"
    atomic_write_text(received, text)
    return str(received)
