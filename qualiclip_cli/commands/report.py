"""`qualiclip report PATH… -o review.html`: a review page of the scored photos, opened offline in a browser."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands.errors import EXIT_OK, EXIT_PARTIAL, handle_errors


@handle_errors
@opt.with_options(*opt.WALK, *opt.SCORING, "quiet")
def report(
    paths: opt.PathsArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="The page to write; its thumbnails go into a hidden "
                                         "folder beside it (.NAME.files/). An existing file is replaced only if it "
                                         "is a qualiclip report.")] = Path("review.html"),
    heatmaps: Annotated[bool, typer.Option("--heatmaps", help="Also compute each photo's heat map (see `qualiclip "
                                           "explain`) for the page's heat-map button: a full model pass per photo, "
                                           "the results cache cannot serve it.")] = False,
    title: Annotated[str, typer.Option("--title", help="The page's title.")] = "qualiclip review",

    **shared,
) -> None:
    """Write a review page: the photos as a grid, worst first, with their sub-scores, errors and a cull slider.

    Examples:

        qualiclip report shoot/ -o review.html            (then open review.html in a browser)
        qualiclip report shoot/ -o review.html --heatmaps (with a heat map per photo, on demand)

    The page works offline (no network, no server). Sort by score, name, capture time or burst group; the
    slider marks the photos `qualiclip cull --below T` would take and shows that exact command. Scores come
    from the results cache where it has them (a scored library is only decoded for the thumbnails). Folders
    named _rejected (cull's quarantine) are not walked, as cull does not walk them. The page path goes to
    stdout, the summary to stderr. Exit codes: 0 ok, 3 some files could not be scored (listed on the page),
    1 error, 2 bad usage.
    """
    from qualiclip_cli.commands.console import advance, make_progress, markup_safe, notes, warn
    from qualiclip_cli.commands.scoring import summarise
    from qualiclip_cli.commands.weights_progress import announce_download
    from qualiclip_cli.core.curation.plan import QUARANTINE_DIRNAME
    from qualiclip_cli.core.names import display
    from qualiclip_cli.core.pipeline.report import report_paths

    choices = opt.ScoringChoices.from_params({**shared, "paths": paths}, extra_exclude=[QUARANTINE_DIRNAME])
    command = cull_command(paths, choices)
    import contextlib

    with contextlib.ExitStack() as stack:
        bar = None

        def on_start(total: int) -> None:
            nonlocal bar
            bar = stack.enter_context(make_progress("Scoring", total))

        def on_record(record) -> None:
            advance(bar)
            if not record.ok:
                warn(f"{record.path}: {record.error}")

        run = report_paths(
            choices.paths, output, walk=choices.walk(), options=choices.score_options(), weights=choices.weights,
            offline=choices.offline, heatmaps=heatmaps, title=title, cull_command=command, on_start=on_start,
            on_record=on_record, on_warning=warn, on_download_start=announce_download,
            on_walk_problem=lambda found: None,  # their error rows are warned about by on_record
        )
    records = [e.record for e in run.entries]
    summarise(records, run.elapsed, run.skipped)
    notes().print(markup_safe(f"qualiclip: wrote {output} ({len(records)} photos)"), highlight=False)
    sys.stdout.write(display(output) + "\n")
    sys.stdout.flush()
    raise typer.Exit(EXIT_PARTIAL if any(not r.ok for r in records) else EXIT_OK)


def shell_word(text: str) -> str:
    """``text`` as one word a POSIX shell reads back exactly: single quotes, or bash's $'…' with \\xNN escapes for
    a name holding bytes that are not UTF-8 or characters that are not printable."""
    import os
    import shlex

    if text.isprintable() and not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        return shlex.quote(text)
    out = []
    for byte in os.fsencode(text):
        ch = chr(byte)
        if 0x20 <= byte < 0x7F and ch not in "'\\":
            out.append(ch)
        else:
            out.append(f"\\x{byte:02x}")
    return "$'" + "".join(out) + "'"


def cull_command(paths, choices: opt.ScoringChoices) -> str:
    """The `qualiclip cull` command line that walks and scores these paths as this report did (the page adds
    ``--below T``)."""
    words = ["qualiclip", "cull", *(shell_word(str(p)) for p in paths)]
    if not choices.recursive:
        words.append("--no-recursive")
    for glob in choices.include or []:
        words += ["--include", shell_word(glob)]
    from qualiclip_cli.core.curation.plan import QUARANTINE_DIRNAME

    for glob in choices.exclude or []:
        if glob != QUARANTINE_DIRNAME:
            words += ["--exclude", shell_word(glob)]
    if choices.hidden:
        words.append("--hidden")
    if choices.follow:
        words.append("--follow")
    if choices.max_side != "1024":
        words += ["--max-side", shell_word(choices.max_side)]
    if choices.jpeg_draft:
        words.append("--jpeg-draft")
    if choices.device != "auto":
        words += ["--device", shell_word(choices.device)]
    if choices.precision != "auto":
        words += ["--precision", choices.precision]
    if choices.decoder != "auto":
        words += ["--decoder", choices.decoder]
    if choices.max_pixels is not None:
        words += ["--max-pixels", str(choices.max_pixels)]
    if choices.weights is not None:
        words += ["--weights", shell_word(str(choices.weights))]
    return " ".join(words)
