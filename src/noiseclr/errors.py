"""User-facing errors.

Everything the user can cause (a bad flag, a missing folder, a directions file from another
model) raises :class:`NoiseCLRError` with a one-line message that names the culprit and says
what to do. The command line prints that line and exits with status 2; it never shows a
traceback for these.
"""

from __future__ import annotations


class NoiseCLRError(Exception):
    """An error caused by user input, with a one-line, actionable message."""

    def __init__(self, message: str):
        # One line only: the CLI prints it verbatim.
        super().__init__(" ".join(str(message).split()))


class TrainingDiverged(NoiseCLRError):
    """The discovery loss became NaN or infinite; the last good checkpoint was kept."""
