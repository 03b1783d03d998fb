"""Which replica gets the next attempt: the one with the fewest requests outstanding, skipping sick ones.

Least-outstanding beats round-robin when answers take uneven time (long captions, a slower node): a replica that is
behind gets fewer new requests. Ties rotate, so an idle fleet is still used evenly.

A replica whose last `failures` attempts all failed at the transport level (refused or dropped connections,
timeouts, 5xx) is skipped for `cooldown` seconds, then let through one probe at a time until an attempt succeeds:
a circuit breaker. Without it a dead replica, which refuses at once and so always has the fewest requests
outstanding, would draw most of the traffic. When every replica is being skipped the least loaded one is used
anyway: the breaker steers traffic, it never stalls a request (retry backoff paces those). A retry avoids the replica
that just failed whenever another one is usable.

Not thread-safe: the backend calls it from its event loop and reads `snapshot()` under its own lock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Replica:
    url: str
    index: int
    outstanding: int = 0
    attempts: int = 0
    ok: int = 0
    failures: Counter = field(default_factory=Counter)
    consecutive_failures: int = 0
    open_until: float = 0.0
    breaker_opened: int = 0


class Balancer:
    def __init__(
        self,
        urls: Sequence[str],
        failures: int = 3,
        cooldown: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not urls:
            raise ValueError("at least one endpoint is needed")
        self.replicas = [Replica(url, i) for i, url in enumerate(urls)]
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._turn = 0

    def _usable(self, r: Replica, now: float) -> bool:
        if r.open_until > now:
            return False
        return not (r.consecutive_failures >= self.failures and r.outstanding > 0)  # one probe at a time

    def pick(self, avoid: Replica | None = None) -> Replica:
        """The replica for the next attempt, counted as started there."""
        now = self._clock()
        usable = [r for r in self.replicas if self._usable(r, now)] or self.replicas
        if len(usable) > 1:
            usable = [r for r in usable if r is not avoid]
        n, turn = len(self.replicas), self._turn
        self._turn += 1
        chosen = min(usable, key=lambda r: (r.outstanding, (r.index - turn) % n))
        chosen.outstanding += 1
        chosen.attempts += 1
        return chosen

    def succeeded(self, r: Replica) -> None:
        r.outstanding -= 1
        r.ok += 1
        r.consecutive_failures = 0

    def failed(self, r: Replica, cause: str, sick: bool) -> None:
        """An attempt at `r` failed with `cause`; `sick` failures (the replica itself looks unwell) feed the breaker."""
        r.outstanding -= 1
        r.failures[cause] += 1
        if not sick:
            return
        r.consecutive_failures += 1
        if r.consecutive_failures >= self.failures:
            now = self._clock()
            if r.open_until <= now:
                r.breaker_opened += 1
            r.open_until = now + self.cooldown

    def abandoned(self, r: Replica) -> None:
        """An attempt at `r` ended without an outcome (the caller gave up on it)."""
        r.outstanding -= 1

    def snapshot(self) -> dict:
        return {
            r.url: {
                "attempts": r.attempts,
                "ok": r.ok,
                "failures": dict(r.failures),
                "breaker_opened": r.breaker_opened,
            }
            for r in self.replicas
        }
