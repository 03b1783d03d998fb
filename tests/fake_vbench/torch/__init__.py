"""Stand-in for torch in the fake VBench environment: the runner only builds a `torch.device` from it.

Importing the real torch would add seconds to every runner start in the tests and test nothing of ours.
"""


class device:  # lower case: torch's own name
    def __init__(self, type: str):
        self.type = str(type)

    def __repr__(self) -> str:
        return f"device(type={self.type!r})"
