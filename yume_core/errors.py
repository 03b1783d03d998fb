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
