"""How long to wait before retrying a request: exponential backoff with full jitter, or the server's `Retry-After`.

Full jitter (a uniform draw between 0 and the exponential cap) spreads the retries of many requests that failed
together (a replica restart, a burst of 429s) instead of sending them back in lockstep. A `Retry-After` from the
server wins over our own guess, plus up to 10% jitter for the same reason, capped like any other wait.
"""

from __future__ import annotations

import datetime
import email.utils
import random
import time


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number `retry` (1 for the first): uniform in [0, min(cap, base * 2**(retry-1))]."""
    return rng.uniform(0.0, min(cap, base * 2.0 ** (retry - 1)))


def retry_delay(retry: int, retry_after: float | None, base: float, cap: float, rng: random.Random) -> float:
    if retry_after is None:
        return backoff_delay(retry, base, cap, rng)
    return min(cap, retry_after * (1.0 + 0.1 * rng.random()))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP-date (RFC 9110); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC with no local offset given
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
