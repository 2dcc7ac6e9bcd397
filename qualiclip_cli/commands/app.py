"""The `qualiclip` command: registers one module per command. Keep imports here light (`--help` is instant)."""

from __future__ import annotations

import typer

from qualiclip_cli import __version__
from qualiclip_cli.commands import cull as cull_cmd
from qualiclip_cli.commands import dataset as dataset_cmd
from qualiclip_cli.commands import evaluate as evaluate_cmd
from qualiclip_cli.commands import explain as explain_cmd
from qualiclip_cli.commands import group as group_cmd
from qualiclip_cli.commands import history as history_cmd
from qualiclip_cli.commands import report as report_cmd
from qualiclip_cli.commands import score as score_cmd
from qualiclip_cli.commands import sort as sort_cmd
from qualiclip_cli.commands import tag as tag_cmd
from qualiclip_cli.commands import train as train_cmd
from qualiclip_cli.commands import undo as undo_cmd
from qualiclip_cli.commands import weights as weights_cmd

app = typer.Typer(
    name="qualiclip",
    help="Score, cull, sort and tag photos by quality with QualiCLIP (a CLIP-based no-reference IQA model).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qualiclip {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Results go to stdout, progress and logs to stderr. Exit codes: 0 ok, 1 error, 2 usage, 3 some files failed."""


app.command("score")(score_cmd.score)
app.command("cull")(cull_cmd.cull)
app.command("group")(group_cmd.group)
app.command("explain")(explain_cmd.explain)
app.command("report")(report_cmd.report)
app.command("sort")(sort_cmd.sort)
app.command("tag")(tag_cmd.tag)
app.command("undo")(undo_cmd.undo)
app.command("history")(history_cmd.history)
app.add_typer(weights_cmd.app, name="weights")
app.add_typer(train_cmd.app, name="train")
app.command("evaluate")(evaluate_cmd.evaluate)
app.add_typer(dataset_cmd.app, name="dataset")


def main() -> None:
    from qualiclip_cli.commands.console import prepare_streams

    prepare_streams()  # before parsing: --help too writes what the stream's encoding cannot carry escaped
    app()
