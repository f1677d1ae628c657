"""The kit's error type: one line that names the file, model, tensor or setting at fault.

The CLI prints `str(error)` and exits non-zero, so messages must be complete sentences on one line.
"""


class MergeBenchError(Exception):
    """A user-facing error with a one-line message."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))
