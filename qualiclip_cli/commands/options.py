"""Options shared by the commands that score files (score, cull, sort, tag), declared once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from qualiclip_cli.core.curation.groups import GroupOptions
from qualiclip_cli.core.curation.selection import ScoreKey
from qualiclip_cli.core.images.discovery import RawPairs as RawPairsChoice
from qualiclip_cli.core.model.runtime import Precision as PrecisionChoice
from qualiclip_cli.core.pipeline.options import Decoder as DecoderChoice

PathsArg = Annotated[list[Path], typer.Argument(help="Image files and/or directories.", show_default=False)]
InputPathsArg = Annotated[
    Optional[list[Path]],
    typer.Argument(help="Image files and/or directories; - reads more paths from stdin, one per line.",
                   show_default=False),
]
FilesFrom = Annotated[
    Optional[Path],
    typer.Option("--files-from", help="Also read paths from this file, one per line (- for stdin); empty lines "
                 "are ignored, a listed file that does not exist gets an error row.", show_default=False),
]
Null = Annotated[
    bool, typer.Option("--null", "-0", help="Paths read from stdin or --files-from are separated by NUL bytes "
                       "(find -print0), not newlines.")
]

By = Annotated[
    ScoreKey,
    typer.Option("--by", help="What to cull, rank and tier by: the score, or one of the seven sub-scores "
                 "(as in `score --details`)."),
]

Recursive = Annotated[bool, typer.Option("--recursive/--no-recursive", help="Walk directories recursively.")]
Include = Annotated[Optional[list[str]], typer.Option("--include", help="Only files matching this glob (repeatable).")]
Exclude = Annotated[Optional[list[str]], typer.Option("--exclude", help="Skip files matching this glob (repeatable).")]
Hidden = Annotated[bool, typer.Option("--hidden", help="Include hidden files and folders (names starting with '.').")]
Follow = Annotated[bool, typer.Option("--follow", help="Follow symbolic links (loops are detected).")]
RawPairs = Annotated[
    RawPairsChoice,
    typer.Option("--raw-pairs", help="A RAW and a camera JPEG/HEIF of the same name in one folder are one frame: "
                 "jpeg scores the JPEG (the RAW goes wherever it goes), raw scores the RAW (the JPEG goes with it), "
                 "both scores each."),
]

MaxSide = Annotated[
    str,
    typer.Option(
        "--max-side",
        help="Downscale so the longer side is at most N px (never upscale). 0 or 'native': full resolution, "
        "exactly like the reference implementation.",
    ),
]
JpegDraft = Annotated[
    bool,
    typer.Option("--jpeg-draft/--no-jpeg-draft", help="Decode JPEGs at a reduced DCT scale when still >= the target size "
                 "(faster decoding; in our measurements it moved scores by more than 0.01, so off by default)."),
]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per forward pass \\[default: 1 on CPU, 16 on GPU].")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
Precision = Annotated[
    PrecisionChoice, typer.Option("--precision", help="auto: fp16 on CUDA (as the reference runs it there), fp32 elsewhere; fp32: the strict mode; bf16 is about 3x faster on CPUs with AMX.")
]
Decoder = Annotated[
    DecoderChoice,
    typer.Option("--decoder", help="auto: batched JPEG decoding on the GPU (nvjpeg) with CUDA at a reduced size, "
                 "Pillow otherwise."),
]
Workers = Annotated[
    Optional[int],
    typer.Option("--workers", min=0, help="Decode threads; 0 decodes between forward passes \\[default: min(4, CPUs) on CPU, min(16, CPUs) on GPU]."),
]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the results cache.")]
Rescore = Annotated[bool, typer.Option("--rescore", help="Ignore cached results (and refresh them).")]
Weights = Annotated[
    Optional[Path], typer.Option("--weights", help="Weights file to use (else $QUALICLIP_WEIGHTS, the cache dir, a download).")
]
Profile = Annotated[
    Optional[Path],
    typer.Option("--profile", help="A personal profile learned from your ratings (`qualiclip train --from-ratings`): "
                 "scores by your taste; refused with other base weights than it was learned on.", show_default=False),
]
Offline = Annotated[bool, typer.Option("--offline", help="Never touch the network (also QUALICLIP_OFFLINE=1).")]
FullPrecision = Annotated[
    bool,
    typer.Option("--full-precision", help="Write scores with every digit in csv/jsonl/json \\[default: rounded to 6 "
                 "significant digits]."),
]


# The grouping thresholds (score --groups, group, cull --per-group, tag --per-group); defaults in core.curation.groups.
GROUPING = GroupOptions()
BurstGap = Annotated[float, typer.Option("--burst-gap", help="Seconds between two frames of one burst.")]
BurstSimilarity = Annotated[
    float, typer.Option("--burst-sim", help="Least embedding similarity (cosine) of two "
                        "frames within the burst gap to be one burst (provisional, see the README).")
]
SceneGap = Annotated[float, typer.Option("--scene-gap", help="Seconds between two frames of one scene.")]
SceneSimilarity = Annotated[
    float, typer.Option("--scene-sim", help="Least similarity of two frames within the "
                        "scene gap to be one scene (stricter than the burst similarity; provisional).")
]
MaxSpan = Annotated[float, typer.Option("--max-span", help="Seconds a group may span at most, first to last frame.")]
SplitSpan = Annotated[
    float, typer.Option("--split-span", help="Seconds after which a group is cut at each link "
                        "weaker than the scene similarity.")
]


def group_options(values: dict):
    """The grouping thresholds among a command's shared options: `groups.GroupOptions`."""
    return GroupOptions(burst_gap=values["burst_gap"], burst_similarity=values["burst_similarity"],
                        scene_gap=values["scene_gap"], scene_similarity=values["scene_similarity"],
                        max_span=values["max_span"], split_span=values["split_span"])


def _set_quiet(value: bool) -> bool:
    from qualiclip_cli.commands.console import set_quiet

    return set_quiet(value)


#: Declared by every command that prints progress, notes or a summary on stderr; applied in `console`, once.
Quiet = Annotated[
    bool,
    typer.Option("--quiet", "-q", envvar="QUALICLIP_QUIET", callback=_set_quiet,
                 help="No progress bars, notes or summaries on stderr; errors and warnings (a file that failed or "
                      "was left out) stay. Stdout and the exit codes are the same."),
]

MaxPixels = Annotated[
    Optional[int],
    typer.Option("--max-pixels", min=1, help="Refuse images above this many pixels as scored \\[default: 50,000,000 at native size]."),
]

DecodeMemory = Annotated[
    Optional[str],
    typer.Option("--decode-memory", help="Memory that the images being decoded may take at once, e.g. 2GB or 800MB; "
                 "an image that alone needs more is an error row, not decoded \\[default: 2GB]."),
]

# -- the shared options, declared once ------------------------------------------------------------------------

#: Every option several commands share: name -> (its declaration, its default). `with_options` adds them to a
#: command's signature, so each command lists only the names it takes.
SHARED: dict[str, tuple[object, object]] = {
    "files_from": (FilesFrom, None),
    "null": (Null, False),
    "burst_gap": (BurstGap, GROUPING.burst_gap),
    "burst_similarity": (BurstSimilarity, GROUPING.burst_similarity),
    "scene_gap": (SceneGap, GROUPING.scene_gap),
    "scene_similarity": (SceneSimilarity, GROUPING.scene_similarity),
    "max_span": (MaxSpan, GROUPING.max_span),
    "split_span": (SplitSpan, GROUPING.split_span),
    "recursive": (Recursive, True),
    "include": (Include, None),
    "exclude": (Exclude, None),
    "hidden": (Hidden, False),
    "follow": (Follow, False),
    "raw_pairs": (RawPairs, "jpeg"),
    "max_side": (MaxSide, "1024"),
    "jpeg_draft": (JpegDraft, False),
    "batch_size": (BatchSize, None),
    "device": (Device, "auto"),
    "precision": (Precision, "auto"),
    "workers": (Workers, None),
    "decoder": (Decoder, "auto"),
    "max_pixels": (MaxPixels, None),
    "decode_memory": (DecodeMemory, None),
    "no_cache": (NoCache, False),
    "rescore": (Rescore, False),
    "weights": (Weights, None),
    "profile": (Profile, None),
    "offline": (Offline, False),
    "quiet": (Quiet, False),
}

#: Paths listed on stdin or in a file (commands whose PATH argument is optional).
PATH_LISTS = ("files_from", "null")
#: The grouping thresholds.
GROUPING_OPTIONS = ("burst_gap", "burst_similarity", "scene_gap", "scene_similarity", "max_span", "split_span")
#: How PATH arguments are walked.
WALK = ("recursive", "include", "exclude", "hidden", "follow", "raw_pairs")
#: How files are scored (the fields of `ScoringChoices` besides the walk).
SCORING = ("max_side", "jpeg_draft", "batch_size", "device", "precision", "workers", "decoder", "max_pixels",
           "decode_memory", "no_cache", "rescore", "weights", "profile", "offline")


def with_options(*names: str):
    """Decorator: add the shared options ``names`` (keys of `SHARED`, in this order) after a command's own
    parameters. The command takes them as ``**shared``; Typer sees one signature with all of them, so their help,
    defaults and checks are the same in every command that takes them."""
    import functools
    import inspect
    from typing import get_type_hints

    unknown = [name for name in names if name not in SHARED]
    if unknown:
        raise TypeError(f"not a shared option: {', '.join(unknown)}")

    def decorate(command):
        hints = get_type_hints(command, include_extras=True)
        signature = inspect.signature(command)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=SHARED[name][0],
                                   default=SHARED[name][1]) for name in names]

        @functools.wraps(command)
        def wrapper(**kwargs):
            return command(**kwargs)

        params = own + added
        wrapper.__signature__ = signature.replace(parameters=params)
        wrapper.__annotations__ = {**{p.name: p.annotation for p in params}, "return": None}
        return wrapper

    return decorate


_MEMORY_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
                 "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory_size(value: str, option: str = "--decode-memory") -> int:
    """'2GB', '1.5 G', '800MB', '512MiB', '1000000' (bytes) to a positive number of bytes (kB/MB/GB are powers
    of 1000, KiB/MiB/GiB of 1024)."""
    import re

    from qualiclip_cli.core.errors import UsageError

    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", value)
    unit = match and _MEMORY_UNITS.get(match[2].lower())
    if not match or unit is None:
        raise UsageError(f"{option} must be a size such as 2GB, 800MB or 512MiB, not {value!r}")
    size = int(float(match[1]) * unit)
    if size <= 0:
        raise UsageError(f"{option} must be more than 0 bytes, not {value!r}")
    return size


def parse_max_side(value: str) -> int:
    from qualiclip_cli.core.errors import UsageError

    text = value.strip().lower()
    if text == "native":
        return 0
    try:
        side = int(text)
    except ValueError:
        raise UsageError(f"--max-side must be a number of pixels or 'native', not {value!r}") from None
    if side != 0 and side < 32:
        raise UsageError("--max-side must be 0 (native) or at least 32")
    return side


def comma_list(text: str | None) -> list[str] | None:
    """A comma-separated option (e.g. --distortions) as its non-empty, stripped items; None when not given."""
    return [item.strip() for item in text.split(",") if item.strip()] if text else None


def input_paths(paths: list[Path] | None, files_from: Path | None, null: bool = False) -> Iterator[str | Path]:
    """The PATH arguments with `-` replaced by the paths listed on stdin, then those of --files-from; read as
    they are walked. Usage mistakes (no path at all, stdin named twice, a list that cannot be opened) are
    raised here, before any work."""
    from qualiclip_cli.core.errors import UsageError

    paths = list(paths or [])
    if not paths and files_from is None:
        raise UsageError("no PATH given (name image files or folders, - to read paths from stdin, or --files-from FILE)")
    from_stdin = sum(str(p) == "-" for p in paths) + (files_from is not None and str(files_from) == "-")
    if from_stdin > 1:
        raise UsageError("stdin can be read only once: name - (or --files-from -) a single time")
    listed = None
    if files_from is not None and str(files_from) != "-":
        try:
            listed = open(files_from, "rb")  # noqa: SIM115 (closed by the generator below, once read)
        except OSError as exc:
            raise UsageError(f"--files-from {files_from}: {_reason(exc)}") from None
    return _input_paths(paths, files_from, listed, null)


def _reason(exc: OSError) -> str:
    return " ".join((exc.strerror or type(exc).__name__).split()).lower()


def _input_paths(paths: list[Path], files_from: Path | None, listed, null: bool) -> Iterator[str | Path]:
    import sys

    from qualiclip_cli.core.errors import QualiclipError
    from qualiclip_cli.core.images.discovery import read_path_list

    def read(stream, name: str) -> Iterator[str]:
        try:
            yield from read_path_list(stream, null)
        except OSError as exc:
            raise QualiclipError(f"cannot read the paths from {name}: {_reason(exc)}") from None

    for path in paths:
        if str(path) == "-":
            yield from read(sys.stdin.buffer, "stdin")
        else:
            yield path
    if listed is not None:
        with listed:
            yield from read(listed, str(files_from))
    elif files_from is not None:
        yield from read(sys.stdin.buffer, "stdin")


@dataclass
class ScoringChoices:
    """What the user chose on the command line, gathered so commands pass one object around."""

    paths: Iterable[str | Path]
    recursive: bool = True
    include: list[str] | None = None
    exclude: list[str] | None = None
    hidden: bool = False
    follow: bool = False
    raw_pairs: RawPairsChoice = "jpeg"
    max_side: str = "1024"
    jpeg_draft: bool = False
    batch_size: int | None = None
    device: str = "auto"
    precision: PrecisionChoice = "auto"
    workers: int | None = None
    no_cache: bool = False
    rescore: bool = False
    weights: Path | None = None
    offline: bool = False
    max_pixels: int | None = None
    decode_memory: str | None = None
    decoder: DecoderChoice = "auto"
    profile: Path | None = None

    @classmethod
    def from_params(cls, values: dict, extra_exclude: tuple[str, ...] | list[str] = ()) -> ScoringChoices:
        """From a command's PATHs and shared options (``{**shared, "paths": paths}``, see `with_options`), plus
        exclude globs. Every field must be given: a scoring command that forgot one would otherwise quietly score
        with its default."""
        from dataclasses import fields

        missing = [f.name for f in fields(cls) if f.name not in values]
        if missing:
            raise TypeError(f"scoring command lacks the shared options {', '.join(missing)}")
        kwargs = {f.name: values[f.name] for f in fields(cls)}
        exclude = list(kwargs.get("exclude") or [])
        kwargs["exclude"] = exclude + [e for e in extra_exclude if e not in exclude]
        return cls(**kwargs)

    def score_options(self, signals: bool = False):
        """The scoring options the core takes (`ScoreOptions`); ``signals``: every record needs its grouping
        signals (a cached score without them is computed again)."""
        from qualiclip_cli.core.pipeline.options import ScoreOptions

        return ScoreOptions(signals=signals,
            max_side=parse_max_side(self.max_side), draft=self.jpeg_draft, batch_size=self.batch_size,
            device=self.device, precision=self.precision, workers=self.workers, use_cache=not self.no_cache,
            rescore=self.rescore, max_pixels=self.max_pixels, decoder=self.decoder,
            decode_memory=None if self.decode_memory is None else parse_memory_size(self.decode_memory),
            profile=None if self.profile is None else str(self.profile),
        )

    def walk(self):
        """How the PATH arguments are walked (`WalkOptions`)."""
        from qualiclip_cli.core.pipeline.run import WalkOptions

        return WalkOptions(
            recursive=self.recursive, include=tuple(self.include or ()), exclude=tuple(self.exclude or ()),
            hidden=self.hidden, follow_symlinks=self.follow, raw_pairs=self.raw_pairs,
        )
