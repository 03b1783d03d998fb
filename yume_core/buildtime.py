"""One build time for everything a run writes, never the clock: reruns give the same bytes.

The time is `SOURCE_DATE_EPOCH` (seconds since 1970, the reproducible-builds convention) when set, else
`YUME_BUILD_TIME` (an ISO 8601 time or epoch seconds), else the epoch itself (1970-01-01T00:00:00Z: "not set").
Tar member mtimes, the `created` of sample provenance and the data card's date all come from here. `yume-data build`
sets `SOURCE_DATE_EPOCH` for its subflows from its `build_time` setting, so a whole build shares one.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

ENV_VARS = ("SOURCE_DATE_EPOCH", "YUME_BUILD_TIME")


def parse_time(value: str | int | float) -> int:
    """Epoch seconds from epoch seconds or an ISO 8601 time (naive times are UTC)."""
    text = str(value).strip()
    try:
        return int(float(text))
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"build time {value!r} is neither epoch seconds nor an ISO 8601 time "
                         "(e.g. 2026-01-31T00:00:00Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp())


def build_epoch() -> int:
    """The build time in epoch seconds (see the module docstring)."""
    for name in ENV_VARS:
        value = os.environ.get(name)
        if value:
            try:
                return parse_time(value)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
    return 0


def build_time_iso(epoch: int | None = None) -> str:
    """The build time as `YYYY-MM-DDTHH:MM:SS+00:00`."""
    epoch = build_epoch() if epoch is None else epoch
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def is_set() -> bool:
    return any(os.environ.get(name) for name in ENV_VARS)
