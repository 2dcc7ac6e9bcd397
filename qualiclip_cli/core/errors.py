"""Domain exceptions. The CLI translates these into one-line messages and exit codes."""


class QualiclipError(Exception):
    """Base class: a failure the user can understand and act on. str(exc) is the one-line message."""

    exit_code = 1


class UsageError(QualiclipError):
    """The request itself is invalid (bad option combination, bad value)."""

    exit_code = 2


class WeightsError(QualiclipError):
    """Weights file missing, corrupt, of the wrong layout, or not matching its recorded hash."""


class OfflineError(WeightsError):
    """Network access was needed but offline mode is on (or there is no network)."""


class ImageError(QualiclipError):
    """One image could not be read or decoded. Per-file: recorded as an error row, never fatal."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CurationError(QualiclipError):
    """A file operation (move, copy, trash, sidecar write, undo) could not be carried out safely."""


class JournalError(QualiclipError):
    """The journal of file operations is missing, unreadable, or does not contain the requested run."""
