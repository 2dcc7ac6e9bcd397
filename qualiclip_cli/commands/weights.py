"""`qualiclip weights download | import FILE | path | verify`.

A path on stdout is shown as text output shows names (`core.names.display`: one line, undecodable bytes as
\\xe9), so a weights file in a folder whose name is not UTF-8 prints as valid UTF-8 text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands.console import notes
from qualiclip_cli.commands.errors import handle_errors
from qualiclip_cli.core.names import display

app = typer.Typer(help="Manage the QualiCLIP weights file (download, import, locate, verify).", no_args_is_help=True)


@app.command()
@handle_errors
def download(
    force: Annotated[bool, typer.Option("--force", help="Download again even if a valid file is installed.")] = False,
    quiet: opt.Quiet = False,
) -> None:
    """Download the official weights into the cache dir (checked, then pinned by SHA-256).

    Examples:

        qualiclip weights download
    """
    from qualiclip_cli.commands.weights_progress import download_with_progress
    from qualiclip_cli.core.model import weights as W

    if W.offline_requested():
        raise W.OfflineError("offline mode is on (QUALICLIP_OFFLINE); unset it to download")
    resolved = download_with_progress(force=force)
    typer.echo(display(resolved.path))
    notes().print(f"sha256 {resolved.sha256}  ({W.QUALICLIP.license})", highlight=False)


@app.command("import")
@handle_errors
def import_(
    file: Annotated[Path, typer.Argument(help="A qualiclip.pth obtained elsewhere.", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Replace an installed file that differs.")] = False,
    quiet: opt.Quiet = False,
) -> None:
    """Install a weights file downloaded on another machine (for offline use).

    Examples:

        qualiclip weights import ~/Downloads/qualiclip.pth
    """
    from qualiclip_cli.core.model import weights as W

    path = W.import_weights(file, force=force)
    typer.echo(display(path))
    notes().print(f"installed, sha256 {W.read_recorded_hash(path)}", highlight=False)


@app.command()
@handle_errors
def path() -> None:
    """Print where the weights file is (or would be) installed.

    Examples:

        qualiclip weights path
    """
    from qualiclip_cli.core.model import weights as W

    typer.echo(display(W.cached_weights_path()))


@app.command()
@handle_errors
def verify(
    file: Annotated[Path | None, typer.Argument(help="File to check \\[default: the installed one].", show_default=False)] = None,
    profile: Annotated[Path | None, typer.Option("--profile", help="Check a personal profile (`train --from-ratings`) instead and show its provenance; with FILE, also whether it was learned on those weights.", show_default=False)] = None,
) -> None:
    """Check a weights file: loads safely, has the QualiCLIP layout, holds no NaN or infinite values, and matches
    its pinned SHA-256.

    Examples:

        qualiclip weights verify                                      # the installed file
        qualiclip weights verify runs/mine/qualiclip-finetuned.pth
        qualiclip weights verify --profile my-taste.pth
    """
    from qualiclip_cli.core.model import layout
    from qualiclip_cli.core.model import weights as W

    if profile is not None:
        _verify_profile(profile, file)
        return
    target = Path(file) if file else W.cached_weights_path()
    if file is None and not target.exists():
        raise W.WeightsError(f"{target}: no weights installed; run `qualiclip weights download` or `qualiclip weights import FILE`")
    digest = W.verify_recorded_hash(target) if W.read_recorded_hash(target) else W.sha256_file(target)
    loaded = layout.load_weights_dict(target)
    layout.validate_weights(loaded, target, W.QUALICLIP.expected_shapes if file is None else None)
    layout.check_finite(loaded, target)
    typer.echo(f"{display(target)}: ok (sha256 {digest})")


def _verify_profile(path: Path, weights: Path | None) -> None:
    from qualiclip_cli.core.model import weights as W
    from qualiclip_cli.core.model.profile import describe, load_profile

    loaded = load_profile(path)
    if weights is not None:
        loaded.check_base(W.sha256_file(weights), weights)
    typer.echo(f"{display(path)}: ok, a qualiclip profile" + (f" learned on {display(weights)}" if weights else ""))
    for line in describe(loaded):
        typer.echo(f"  {line}")
