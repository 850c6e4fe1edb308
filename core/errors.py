"""Errors the user sees as one sentence.

Every face (CLI, QGIS dock, Processing) catches `UserError` and shows its text as it is, so the
message must name the problem and what to do about it. Anything else is a bug and may show a
traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""


class Cancelled(UserError):
    """The user cancelled the run; nothing was written."""

    def __init__(self, message: str = "The run was cancelled; no output was written."):
        super().__init__(message)
