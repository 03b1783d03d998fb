"""The one exception stages raise for a bad input row.

`reason` is a short code a summary can count by (`video_missing`, `poses_nonfinite`); the message says what a person
should look at or do. Stages catch it per row and turn it into `status=failed`; anything else is a bug and propagates.
"""


class RowError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self):  # picklable across process pools
        return (type(self), (self.reason, self.message))


class InputError(Exception):
    """A whole input file (CSV header, decisions file, config, prompts file) or output folder that cannot be used,
    or a service the command needs that does not answer (a Ray head; an object store, `yume_core.remote.StorageError`).

    Unlike RowError it stops the command: the CLI prints `str(e)` as one line and exits with status 2. The message
    names the file, the problem and the fix: `InputError(path, "has no videoFile column", "export it with ...")`.
    """

    def __init__(self, path, problem: str, fix: str | None = None):
        self.path, self.problem, self.fix = str(path), problem, fix
        super().__init__(f"{self.path}: {problem}" + (f"; {fix}" if fix else ""))

    def __reduce__(self):
        return (type(self), (self.path, self.problem, self.fix))
