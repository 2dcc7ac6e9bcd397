"""`qualiclip evaluate --mos FILE.csv | --synthetic DIR`: compare weights files side by side."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Annotated, Literal, Optional, get_args

import typer

from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands.console import advance, make_progress, warn
from qualiclip_cli.commands.errors import handle_errors

OFFICIAL = ("official", "qualiclip", "default")
#: text: a table for people ("table" is accepted as another name for it); json, csv: for programs.
EvaluateFormat = Literal["text", "table", "json", "csv"]
FORMATS: tuple[str, ...] = get_args(EvaluateFormat)


@handle_errors
def evaluate(
    mos: Annotated[Optional[Path], typer.Option("--mos", help="CSV with columns path,mos (paths relative to the CSV; a name that is not UTF-8 as its bytes or as \\udcXX escapes): SRCC and PLCC of the scores.", show_default=False)] = None,
    synthetic: Annotated[Optional[list[Path]], typer.Option("--synthetic", help="Folder(s) of held-out clean photos: degrade them at 5 levels, report how well quality falls with the level.", show_default=False)] = None,
    ratings: Annotated[Optional[list[Path]], typer.Option("--ratings", help="Photos or folders you rated (XMP stars and rejects; repeatable; give shoots the profile was not trained on): pairwise accuracy, per-shoot SRCC and reject ROC-AUC of the base and of --profile side by side.", show_default=False)] = None,
    profile: Annotated[Optional[Path], typer.Option("--profile", help="--ratings: the personal profile to compare with the base (`train --from-ratings`).", show_default=False)] = None,
    weights: Annotated[Optional[list[str]], typer.Option("--weights", help="Weights file to evaluate (repeatable; 'official' = the installed official weights) \\[default: official].", show_default=False)] = None,
    fmt: Annotated[EvaluateFormat, typer.Option("--format", "-f", help="text (a table), json or csv; table: same as text.")] = "text",
    max_side: opt.MaxSide = "1024",
    jpeg_draft: opt.JpegDraft = False,
    device: opt.Device = "auto",
    precision: Annotated[opt.PrecisionChoice, typer.Option("--precision", help="--mos only, like score's. --synthetic runs fp32.")] = "auto",
    batch_size: opt.BatchSize = None,
    crop_size: Annotated[int, typer.Option("--crop-size", help="--synthetic: crop side in px (as in training).")] = 224,
    crops: Annotated[int, typer.Option("--crops", min=1, help="--synthetic: random crops per photo.")] = 2,
    distortions: Annotated[Optional[str], typer.Option("--distortions", help="--synthetic: comma-separated types \\[default: all 24].")] = None,
    seed: Annotated[int, typer.Option("--seed", help="--synthetic: seed of the crops and degradations.")] = 0,
    offline: opt.Offline = False,
    quiet: opt.Quiet = False,
) -> None:
    """Measure weights files: agreement with human ratings (--mos) or distortion sensitivity (--synthetic).

    Examples:

        qualiclip evaluate --synthetic held-out/ --weights official --weights mine.pth
        qualiclip evaluate --mos ratings.csv --weights official
        qualiclip evaluate --ratings ~/Photos/2025 --profile my-taste.pth --format json

    --mos prints SRCC (Spearman) and PLCC (Pearson, on the raw scores) per weights file.

    --synthetic prints, per distortion group and overall, the Spearman correlation between quality and -level (1: a stronger degradation always looks worse; 0: blind), within each crop ("per crop", steady) and pooled over all crops (content mixes in). Use photos that were not used for training.
    """
    from qualiclip_cli.core.errors import UsageError

    if ratings:
        if mos is not None or synthetic:
            raise UsageError("give exactly one of --mos FILE.csv, --synthetic DIR or --ratings PATH")
        if weights and len(weights) > 1:
            raise UsageError("--ratings compares the base with --profile: give at most one --weights")
        _run_ratings(ratings, profile, (weights or [None])[0], fmt, max_side, jpeg_draft, device, precision,
                     batch_size, offline)
        return
    if profile is not None:
        raise UsageError("--profile goes with --ratings")
    if (mos is None) == (not synthetic):
        raise UsageError("give exactly one of --mos FILE.csv, --synthetic DIR or --ratings PATH")
    choices = _resolve_weights(weights or ["official"], offline)
    if mos is not None:
        rows = _run_mos(mos, choices, max_side, jpeg_draft, device, precision, batch_size)
    else:
        keys = opt.comma_list(distortions)
        rows = _run_synthetic(synthetic, choices, max_side, device, batch_size, crop_size, crops, keys, seed)
    _print(rows, fmt, "mos" if mos is not None else "synthetic")


def _resolve_weights(specs: list[str], offline: bool):
    from qualiclip_cli.core.errors import UsageError
    from training.evaluate import label_weights

    paths, names = [], []
    for spec in specs:
        if spec.strip().lower() in OFFICIAL:
            from qualiclip_cli.commands.weights_progress import resolve_with_progress

            paths.append(resolve_with_progress(None, offline).path)
            names.append("official")
            continue
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UsageError(f"--weights {spec}: no such file (or use 'official')")
        paths.append(path)
        names.append(None)
    return label_weights(paths, names)


def _run_ratings(paths, profile, weights, fmt, max_side, jpeg_draft, device, precision, batch_size, offline) -> None:
    from qualiclip_cli.commands.console import markup_safe, notes
    from qualiclip_cli.commands.options import parse_max_side
    from qualiclip_cli.core.names import json_dumps
    from qualiclip_cli.core.pipeline.options import ScoreOptions
    from training.ratings import evaluate_ratings

    if weights is not None and weights.strip().lower() in OFFICIAL:
        weights = None
    options = ScoreOptions(max_side=parse_max_side(max_side), draft=jpeg_draft, batch_size=batch_size, device=device,
                           precision=precision)
    with make_progress("Scoring rated photos", None) as progress:
        run = evaluate_ratings(
            paths, options=options, weights=weights, offline=offline, profile=profile, on_problem=warn,
            on_found=lambda found: notes().print(f"qualiclip: {markup_safe(found.summary())}", highlight=False),
            on_start=lambda n: progress.update(progress.tasks[0].id, total=n) if progress.tasks else None,
            on_record=lambda record: advance(progress))
    report = run.report
    if fmt == "json":
        sys.stdout.write(json_dumps(report, indent=2) + "\n")
    elif fmt == "csv":
        from qualiclip_cli.core.names import csv_cell

        sys.stdout.write("model,pairwise_accuracy,srcc,reject_auc,pairs,photos,shoots\n")
        for name in ("base", "personal"):
            block = report[name]
            if block is not None:
                cells = [name, *(_cell(block[k]) for k in ("pairwise_accuracy", "srcc", "reject_auc")), block["pairs"],
                         report["photos"], report["shoots"]]
                sys.stdout.write(",".join(csv_cell(str(c)) for c in cells) + "\n")
    else:
        lines = [f"{report['photos']} photos, {report['shoots']} shoots",
                 f"{'':<20}{'base':>10}{'personal':>10}"]
        for key, name in (("pairwise_accuracy", "pairwise accuracy"), ("srcc", "SRCC (mean/shoot)"),
                          ("reject_auc", "reject ROC-AUC")):
            personal = report["personal"]
            lines.append(f"{name:<20}{_fmt(report['base'][key]):>10}"
                         f"{_fmt(personal[key]) if personal else '-':>10}")
        sys.stdout.write("\n".join(lines) + "\n")


def _run_mos(mos, choices, max_side, jpeg_draft, device, precision, batch_size) -> dict:
    from qualiclip_cli.commands.options import parse_max_side
    from qualiclip_cli.core.pipeline.options import ScoreOptions
    from training.evaluate import evaluate_mos, read_mos_csv

    options = ScoreOptions(max_side=parse_max_side(max_side), draft=jpeg_draft, batch_size=batch_size, device=device,
                           precision=precision, use_cache=False)
    total = len(read_mos_csv(mos)) * len(choices)
    with make_progress("Scoring", total) as progress:
        results = evaluate_mos(mos, choices, options=options, warn=warn, progress=partial(advance, progress))
    return {"kind": "mos", "results": [r.to_dict() for r in results]}


def _run_synthetic(paths, choices, max_side, device, batch_size, crop_size, crops, keys, seed) -> dict:
    from qualiclip_cli.commands.options import parse_max_side
    from qualiclip_cli.core.model.runtime import pick_device
    from training.dataset import find_pristine
    from training.evaluate import evaluate_synthetic

    dev = pick_device(device)
    count = len(find_pristine(paths, warn=lambda m: None))
    with make_progress("Degrading and scoring", count) as progress:
        results = evaluate_synthetic(
            paths, choices, crop_size=crop_size, crops_per_image=crops, distortions=keys, seed=seed,
            max_side=parse_max_side(max_side), device=dev, batch_size=batch_size or 32, warn=warn,
            progress=partial(advance, progress),
        )
    return {"kind": "synthetic", "results": [r.to_dict() for r in results]}


# ------------------------------------------------------------------------------------------- output

def _fmt(value: float) -> str:
    return "n/a" if value != value else f"{value:.4f}"  # NaN check


def _cell(value: float) -> str | float:
    """A number for a csv cell: empty when missing (NaN), as in score's csv."""
    return "" if value != value else value


def _synthetic_rows(results: list[dict]) -> list[tuple[str, str, list[float]]]:
    """(measure, group, [value per weights]) in display order: groups, then overall."""
    groups = [g for g in results[0]["per_crop_srcc"] if g != "overall"] + ["overall"]
    rows = []
    for measure, key in (("per-crop SRCC", "per_crop_srcc"), ("pooled SRCC", "pooled_srcc")):
        for group in groups:
            rows.append((measure, group, [r[key][group] for r in results]))
    return rows


def _print(data: dict, fmt: str, kind: str) -> None:
    """Write the results: json and csv (UTF-8, names in the lossless forms of `core.names`, no NaN) or a table
    (names escaped for the terminal, never read as markup)."""
    from qualiclip_cli.commands.console import machine_stream, markup_safe, print_table
    from qualiclip_cli.core.names import csv_cell, json_dumps

    results = data["results"]
    if fmt == "json":
        machine_stream(sys.stdout).write(json_dumps(data, indent=2) + "\n")
        return
    if fmt == "csv":
        import csv

        writer = csv.writer(machine_stream(sys.stdout), lineterminator="\n")
        if kind == "mos":
            writer.writerow(["weights", "n", "srcc", "plcc", "failed"])
            for r in results:
                writer.writerow([csv_cell(r["weights"]), r["n"], _cell(r["srcc"]), _cell(r["plcc"]), r["failed"]])
        else:
            writer.writerow(["measure", "group"] + [csv_cell(r["weights"]) for r in results])
            for measure, group, values in _synthetic_rows(results):
                writer.writerow([measure, group] + [_cell(v) for v in values])
        return
    from rich.table import Table

    if kind == "mos":
        table = Table(title="Agreement with MOS")
        for col in ("weights", "images", "SRCC", "PLCC", "unreadable"):
            table.add_column(col, justify="left" if col == "weights" else "right")
        for r in results:
            table.add_row(markup_safe(r["weights"]), str(r["n"]), _fmt(r["srcc"]), _fmt(r["plcc"]), str(r["failed"]))
    else:
        first = results[0]
        table = Table(title=f"Quality vs degradation level (SRCC with -level; {first['images']} photos, {first['crops']} crops)")
        table.add_column("measure")
        table.add_column("group")
        for r in results:
            table.add_column(markup_safe(r["weights"]), justify="right")
        previous = None
        for measure, group, values in _synthetic_rows(results):
            table.add_row(measure if measure != previous else "", group, *[_fmt(v) for v in values],
                          end_section=group == "overall")
            previous = measure
    print_table(table)
