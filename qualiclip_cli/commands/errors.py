"""Domain exceptions become one-line messages and exit codes at the CLI edge; never a traceback."""

from __future__ import annotations

import functools
import os
import sys

import typer

from qualiclip_cli.commands.console import markup_safe, prepare_streams, stderr

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3  # finished, but some files failed


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print `message` as one error line (a file name in it is shown escaped, never as markup) and return the
    exit to raise."""
    stderr().print(f"[bold red]qualiclip: error:[/] {markup_safe(message)}", markup=True, highlight=False,
                   soft_wrap=True)
    return typer.Exit(code)


def handle_errors(command):
    """Decorator for command functions: translate QualiclipError and friends into exit codes."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from qualiclip_cli.core.errors import QualiclipError

        prepare_streams()
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except QualiclipError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            stderr().print("qualiclip: interrupted", highlight=False)
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # The reader of stdout went away (e.g. `| head`): stop quietly, like other Unix tools.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(EXIT_OK) from None
        except Exception as exc:  # an unexpected bug: one line, the traceback only on request
            if os.environ.get("QUALICLIP_DEBUG"):
                raise
            raise fail(
                f"internal error: {type(exc).__name__}: {exc} (set QUALICLIP_DEBUG=1 to see the traceback)"
            ) from None

    return wrapper
