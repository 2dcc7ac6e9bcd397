"""Domain exceptions and their one-line texts. The CLI translates the exceptions into messages and exit codes.

A path in these texts is kept as Python holds it (a name's undecodable bytes as lone surrogates), so the text
stays lossless; whoever prints it escapes it for people (`names.display`) or writes it losslessly as data.
"""

import os


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
    """One image could not be read or decoded. Per-file: recorded as an error row, never fatal.

    `damaged`: the file's own bytes are broken (empty, truncated, not decodable as an image), as opposed to a
    problem reaching it (missing, permission, I/O error) or one of our limits (size, memory); `cull --unreadable`
    acts on damaged files only.
    """

    def __init__(self, path, reason: str, damaged: bool = False):
        self.path = str(path)
        self.reason = reason
        self.damaged = damaged
        super().__init__(f"{self.path}: {reason}")


class CurationError(QualiclipError):
    """A file operation (move, copy, trash, sidecar write, undo) could not be carried out safely."""


class JournalError(QualiclipError):
    """The journal of file operations is missing, unreadable, or does not contain the requested run."""


# One-line texts for messages built from exceptions (every error row, warning and refusal is one line).

def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def first_line(exc: object) -> str:
    """The first line of an exception's text (a library's multi-line message), or its type's name."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def error_text(exc: BaseException) -> str:
    """The one-line reason a failed file operation reports: ``path: strerror`` for OS errors, else the text."""
    if isinstance(exc, OSError) and not isinstance(exc, QualiclipError):
        # A bytes file name (an os call given bytes) is text like any other, not b'caf\xe9.jpg'.
        name = os.fsdecode(exc.filename) if isinstance(exc.filename, (bytes, os.PathLike)) else exc.filename
        text = f"{name}: {exc.strerror}" if name and exc.strerror else str(exc)
    else:
        text = str(exc)
    return one_line(text) or type(exc).__name__
