"""`qualiclip explain IMG…`: where in each photo the score comes from, as heat-map PNGs or the maps as JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands.errors import EXIT_OK, EXIT_PARTIAL, handle_errors
from qualiclip_cli.core.curation.selection import ScoreKey

#: `score` (the sum of the seven pairs' maps) or one pair, by its sub-score name (`records.PAIR_NAMES`).
MapChoice = ScoreKey  # the score, or one of the seven sub-scores
ExplainFormat = Literal["png", "json"]

#: Where the PNGs go by default (in the current folder).
DEFAULT_OUT_DIR = "qualiclip-explain"


@handle_errors
@opt.with_options(*opt.PATH_LISTS, *opt.WALK, "max_side", "jpeg_draft", "device", "precision", "max_pixels", "decode_memory", "weights", "offline", "quiet")
def explain(
    paths: opt.InputPathsArg = None,
    pair: Annotated[MapChoice, typer.Option("--pair", "-p", help="The map drawn and whose worst regions are listed: "
                                            "score (all seven pairs summed) or one sub-score.")] = "score",
    all_pairs: Annotated[bool, typer.Option("--all-pairs", help="Draw a sheet of eight panels per photo: the seven "
                                            "sub-scores and the score, on one colour scale.")] = False,
    fmt: Annotated[ExplainFormat, typer.Option("--format", "-f", help="png: write a heat-map PNG per photo and print "
                                               "where; json: print the maps (a list, one object per photo).")] = "png",
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", "-o", help="Folder for the PNGs (never replaces a "
                                                    "file; with --format json, PNGs only when given) "
                                                    f"\\[default: ./{DEFAULT_OUT_DIR}].")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=0, help="How many worst regions to list per photo.")] = 3,
    full_precision: opt.FullPrecision = False,

    **shared,
) -> None:
    """Show where each photo's score comes from: a heat map over the photo as scored.

    Examples:

        qualiclip explain photo.jpg                      (qualiclip-explain/photo.explain.png)
        qualiclip explain shoot/ --pair sharpness -o maps/
        qualiclip explain photo.jpg --all-pairs          (a sheet: seven sub-scores and the score)
        qualiclip explain photo.jpg -f json > maps.json  (the maps themselves)

    Red: regions that pull the score down (towards "blurry", "noisy"...), blue: regions that hold it up. Each
    map is exact: its cells plus one constant add up to the pair's logit. The model weighs regions unevenly; a
    region it does not look at stays uncoloured whatever it shows: "not looked at" is not "good".
    Weights, resolution and precision as in `score` (photos are decoded with Pillow; the results cache is not
    used: the maps need the model's full pass). Exit code 0 when every file was explained, 3 when some could
    not be read (error objects in the JSON), 1 on a fatal error, 2 on bad usage.
    """
    import contextlib

    from qualiclip_cli.commands.console import advance, machine_stream, make_progress, markup_safe, notes, warn
    from qualiclip_cli.commands.formats import rounded
    from qualiclip_cli.core.names import display, json_dumps
    from qualiclip_cli.core.pipeline.explain import explain_paths

    paths = opt.input_paths(paths, shared["files_from"], shared["null"])
    choices = opt.ScoringChoices.from_params(
        {**shared, "paths": paths, "batch_size": None, "workers": None, "decoder": "pillow", "no_cache": True, "rescore": False,
         "profile": None})
    write_png = fmt == "png" or out_dir is not None
    folder = out_dir if out_dir is not None else Path(DEFAULT_OUT_DIR)
    written: dict[int, str] = {}
    bar = None
    with contextlib.ExitStack() as stack:
        def on_start(total: int) -> None:
            nonlocal bar
            bar = stack.enter_context(make_progress("Explaining", total))

        def on_explained(record) -> None:
            advance(bar)
            if not record.ok:
                warn(f"{record.path}: {record.error}")
            elif write_png:
                written[id(record)] = _write_png(record, folder, pair, all_pairs)

        run = explain_paths(
            choices.paths, walk=choices.walk(), options=choices.score_options(), weights=choices.weights,
            offline=choices.offline, skip_under=[folder] if write_png else [], worst_of=pair, top_k=top_k,
            on_start=on_start, on_explained=on_explained,
        )
    records = run.records
    if fmt == "json":
        # One object a line (the maps would take a line per number indented): still one JSON list.
        out = machine_stream(sys.stdout)
        rows = [json_dumps(rounded(_row(r, pair, written.get(id(r))), full_precision)) for r in records]
        out.write("[\n" + ",\n".join(rows) + "\n]\n")
    else:
        out = sys.stdout
        for r in records:
            if r.ok:
                out.write(f"{display(written[id(r)])}\t{display(r.path)}\n")
    sys.stdout.flush()
    failed = sum(1 for r in records if not r.ok)
    done = len(records) - failed
    line = f"qualiclip: {done} explained" + (f", {failed} failed" if failed else "") + f", {run.elapsed:.1f} s"
    notes().print(markup_safe(line), highlight=False)
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)


def _write_png(record, folder: Path, pair: str, all_pairs: bool) -> str:
    from qualiclip_cli.core.images.overlay import overlay, save_new_png, sheet
    from qualiclip_cli.core.records import PAIR_NAMES

    if all_pairs:
        panels = [(f"{name} {record.pairs[name]:.3f}", record.maps[name]) for name in PAIR_NAMES]
        panels.append((f"score {record.score:.3f}", record.map_of("score")))
        image = sheet(record.pixels, panels)
        suffix = ".pairs.png"
    else:
        from PIL import Image

        image = Image.fromarray(overlay(record.pixels, record.map_of(pair)))
        suffix = ".explain.png" if pair == "score" else f".{pair}.png"
    return save_new_png(image, folder, Path(record.path).stem, suffix)


def _row(record, pair: str, image: str | None) -> dict:
    """The JSON object of one photo (field order documented in the README)."""
    row = {"path": record.path, "status": record.status, "error": record.error, "score": record.score,
           "width": record.width, "height": record.height, "original_width": record.original_width,
           "original_height": record.original_height, "grid": list(record.grid) if record.grid else None,
           "pairs": None, "worst_map": pair, "worst": None, "image": image}
    if record.ok:
        row["pairs"] = {name: {"probability": record.pairs[name], "logit": record.logits[name],
                               "constant": record.constants[name], "map": record.maps[name].tolist()}
                        for name in record.maps}
        row["worst"] = [{"box": list(region.box), "value": region.value} for region in record.worst]
    return row
