"""Stop a run that fails the same way from its first item on, instead of failing every row one by one.

Per-row failures are the rule of the house (a bad row fails, the run goes on), but when the first K items that
reach the model (videos to generate, clips to caption, videos to score) all fail with the same error class, the
cause is a setting, the model or the environment, not the data: going on would spend hours of GPU time to write
the same error into every row. `FailFast` watches those first K outcomes; if they agree, it raises
`SystematicFailure` (one line: what failed, how, an example message and what to do), and keeps raising for every
later batch of the run. One success or a second error class among the first K settles it: the run goes on and
rows fail on their own as usual.

A flow makes one `FailFast` per run and hands it to every batch. On a thread runner the batches share the object;
pickled into worker processes it becomes one shared watch per process and run (the first K each process sees).
"""

from __future__ import annotations

import threading
import uuid

DEFAULT_K = 8


class SystematicFailure(Exception):
    """The first `count` items of a run all failed with `error_class`; the command ends with this one line."""

    def __init__(self, what: str, count: int, error_class: str, example: str, hint: str):
        self.what, self.count, self.error_class, self.example, self.hint = what, count, error_class, example, hint
        lines = example.strip().splitlines() or [""]
        shown = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1].strip()}"  # a traceback's cause: last
        shown = shown if len(shown) <= 300 else shown[:300] + "..."
        super().__init__(f"stopped: the first {count} {what} all failed with {error_class} ({shown}); {hint}")

    def __reduce__(self):
        return (type(self), (self.what, self.count, self.error_class, self.example, self.hint))


class FailFast:
    """Watches a run's first `k` outcomes (`k` 0: never stops). `record(None)` for a success, `record(cls, msg)` for
    a failure of error class `cls`; `check()` raises once the run was stopped. Thread-safe."""

    def __init__(self, k: int = DEFAULT_K, what: str = "items", hint: str = "", key: str | None = None):
        if k < 0:
            raise ValueError(f"fail_fast must be >= 0 (0: never stop), got {k}")
        self.k, self.what, self.hint = k, what, hint
        self.key = key or uuid.uuid4().hex
        self._lock = threading.Lock()
        self._seen = 0
        self._classes: set[str] = set()
        self._settled = k == 0
        self._example = ""
        self._stopped: SystematicFailure | None = None

    def record(self, error_class: str | None, message: str = "") -> None:
        with self._lock:
            if self._stopped is None and not self._settled:
                if error_class is None:
                    self._settled = True
                else:
                    self._seen += 1
                    self._classes.add(error_class)
                    self._example = self._example or message
                    if len(self._classes) > 1:
                        self._settled = True
                    elif self._seen >= self.k:
                        self._stopped = SystematicFailure(self.what, self.k, error_class, self._example, self.hint)
        self.check()

    def check(self) -> None:
        if self._stopped is not None:
            raise self._stopped

    def __reduce__(self):  # one watch per process and run, however many batches unpickle it
        with _REGISTRY_LOCK:
            _REGISTRY.setdefault(self.key, self)  # a copy unpickled in this process is this watch
        return (_shared, (self.k, self.what, self.hint, self.key))


# Watches that have been pickled or unpickled, by run: kept for the life of the process (one small object per run
# and process), since a worker may get the run's next batch after the previous one's copy is gone.
_REGISTRY: dict[str, FailFast] = {}
_REGISTRY_LOCK = threading.Lock()


def _shared(k: int, what: str, hint: str, key: str) -> FailFast:
    with _REGISTRY_LOCK:
        return _REGISTRY.setdefault(key, FailFast(k, what, hint, key))
