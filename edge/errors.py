"""User-facing errors.

A ``FerEdgeError`` carries a one-line message that names the problem and the fix; the CLI prints
it as ``fer-edge: error: <message>`` and exits with ``exit_code`` (no traceback).
"""


class FerEdgeError(Exception):
    """An error the user can fix: bad config, missing file, corrupt model, missing device."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(FerEdgeError):
    """The config file is unreadable or does not validate."""


class ModelError(FerEdgeError):
    """A model file is missing, corrupt, or does not match the model contract."""


class CameraError(FerEdgeError):
    """A capture source cannot be opened."""


class DataError(FerEdgeError):
    """A dataset file is missing or malformed."""
