"""`report_paths`: a review page of scored photos, one HTML file a person opens offline, thumbnails beside it.

Scoring is `run.score_paths`'s (walk, weights, results cache: on a scored library a photo is decoded only for its
thumbnail) or, with heat maps, `explain.explain_paths`'s (a full pass per photo). The thumbnails (and heat maps)
go into a hidden folder beside the page, ``.<page name>.files/``, named by number: a later walk of the same
folders skips it (hidden folders are not walked by default, and it is left out like the quarantine besides).
The page (`report_page.PAGE`) is replaced only when it is one of ours; the thumbnails folder likewise.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from qualiclip_cli.core.errors import ImageError, QualiclipError
from qualiclip_cli.core.images.discovery import Skipped
from qualiclip_cli.core.names import display, json_dumps
from qualiclip_cli.core.pipeline.options import ScoreOptions
from qualiclip_cli.core.pipeline.run import WalkOptions
from qualiclip_cli.core.records import PAIR_NAMES

#: Longer side of the thumbnails, px.
THUMB_SIDE = 320
#: The file in a thumbnails folder that marks it as ours.
MARKER = ".qualiclip-report"
_OUR_FILES = re.compile(r"\d{5,}\.(heat\.)?jpg")


class ReportError(QualiclipError):
    """The page or its thumbnails folder cannot be written (a file of someone else's is in the way...)."""


@dataclass
class Entry:
    """One photo on the page: its record (a `ScoreRecord`, or anything with its fields; ``group`` and ``best``
    are read when present) and what was made for it."""

    record: object
    thumb: str | None = None  # page-relative URL
    thumb_size: tuple[int, int] | None = None
    heat: str | None = None  # page-relative URL
    taken: str | None = None


@dataclass
class ReportRun:
    page: Path
    entries: list[Entry]
    elapsed: float
    weights_sha256: str
    identity: str
    skipped: Skipped
    thumbnail_failures: int


def files_dir(page: Path) -> Path:
    """The folder beside ``page`` that holds its thumbnails."""
    return page.with_name(f".{page.name}.files")


def check_writable(page: Path) -> None:
    """Refuse, before any work, a page path holding a file that is not one of our pages, or a thumbnails folder
    that is not ours."""
    page = Path(page)
    if page.is_dir():
        raise ReportError(f"{page}: is a folder; name the page's file, e.g. {page / 'review.html'}")
    if page.exists() or page.is_symlink():
        if page.is_symlink() or not page.is_file() or not _is_our_page(page):
            raise ReportError(f"{page}: exists and is not a qualiclip report; not replaced (choose another -o)")
    folder = files_dir(page)
    if folder.exists() or folder.is_symlink():
        if folder.is_symlink() or not folder.is_dir() or not (folder / MARKER).is_file():
            raise ReportError(f"{folder}: exists and is not a qualiclip report's folder; not replaced")


def _is_our_page(page: Path) -> bool:
    from qualiclip_cli.core.pipeline.report_page import GENERATOR

    try:
        with open(page, "rb") as fh:
            return GENERATOR.encode() in fh.read(4096)
    except OSError:
        return False


def _prepare_folder(page: Path) -> Path:
    folder = files_dir(page)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("thumbnails of a qualiclip report page; safe to delete with the page\n")
    for old in os.listdir(folder):  # a previous report's thumbnails (ours by name only)
        if _OUR_FILES.fullmatch(old):
            os.unlink(folder / old)
    return folder


def report_paths(
    paths: Iterable[str | os.PathLike],
    page: Path,
    *,
    walk: WalkOptions = WalkOptions(),
    options: ScoreOptions = ScoreOptions(),
    weights: str | os.PathLike | None = None,
    offline: bool = False,
    heatmaps: bool = False,
    skip_under: Sequence[str | os.PathLike] = (),
    title: str = "qualiclip review",
    cull_command: str = "qualiclip cull",
    workers: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_record: Callable[[object], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_walk_problem=None,
    on_download_start=None,
    on_download_progress=None,
) -> ReportRun:
    """Score the photos under ``paths`` and write the review page ``page`` (see the module docstring).

    ``heatmaps``: also compute each photo's score map (`explain`) for the page's "heat map" button; costs a
    full model pass per photo (the cache cannot serve it). ``cull_command``: the command line the page completes
    with ``--below T``. Thumbnails are made in ``workers`` threads (default: min(4, CPUs)); a photo whose
    thumbnail fails keeps its card (``thumbnail_failures`` counts them, ``on_warning`` names them).
    """
    import time

    page = Path(page)
    check_writable(page)
    folder = files_dir(page)
    skip = [*skip_under, folder]
    start = time.perf_counter()
    common = dict(walk=walk, options=options, weights=weights, offline=offline, skip_under=skip, on_start=on_start,
                  on_walk_problem=on_walk_problem, on_download_start=on_download_start,
                  on_download_progress=on_download_progress)
    entries: list[Entry] = []
    heat_images: dict[int, bytes] = {}
    if heatmaps:
        from qualiclip_cli.core.pipeline.explain import explain_paths

        def on_explained(explained) -> None:
            if explained.ok:
                heat_images[len(entries)] = _heat_png(explained)
            entries.append(Entry(_as_record(explained)))
            if on_record is not None:
                on_record(entries[-1].record)

        run = explain_paths(paths, on_explained=on_explained, **common)
    else:
        from qualiclip_cli.core.pipeline.run import score_paths

        run = score_paths(paths, on_record=on_record, on_warning=on_warning, **common)
        entries = [Entry(r) for r in run.records]
    folder = _prepare_folder(page)
    failures = _thumbnails(entries, folder, heat_images, workers, on_warning)
    write_page(page, entries, title=title, cull_command=cull_command)
    return ReportRun(page, entries, time.perf_counter() - start, run.weights_sha256, run.identity, run.skipped,
                     failures)


def _as_record(explained):
    from qualiclip_cli.core.records import ScoreRecord

    if not explained.ok:
        return ScoreRecord.failure(explained.path, explained.error)
    return ScoreRecord(path=explained.path, score=explained.score, pairs=explained.pairs, width=explained.width,
                       height=explained.height)


def _heat_png(explained) -> bytes:
    import io

    from qualiclip_cli.core.images.overlay import fit, overlay

    image = fit(overlay(explained.pixels, explained.map_of("score")), THUMB_SIDE)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=82)
    return out.getvalue()


def _thumbnails(entries: list[Entry], folder: Path, heat_images: dict[int, bytes], workers: int | None,
                on_warning) -> int:
    from qualiclip_cli.core.images.thumbnail import make_thumbnail

    base = quote(os.fsencode(folder.name)) + "/"
    todo = [i for i, e in enumerate(entries) if getattr(e.record, "ok", False)]

    def one(i: int):
        try:
            return i, make_thumbnail(entries[i].record.path, THUMB_SIDE)
        except ImageError as exc:
            return i, exc

    failures = 0
    with ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1), thread_name_prefix="thumbnail") as pool:
        for i, result in pool.map(one, todo):
            entry = entries[i]
            if isinstance(result, ImageError):
                failures += 1
                if on_warning is not None:
                    on_warning(f"{entry.record.path}: {result.reason}")
                continue
            name = f"{i:05d}.jpg"
            with open(folder / name, "wb") as fh:
                fh.write(result.jpeg)
            entry.thumb, entry.thumb_size, entry.taken = base + name, (result.width, result.height), result.taken
            if i in heat_images:
                heat = f"{i:05d}.heat.jpg"
                with open(folder / heat, "wb") as fh:
                    fh.write(heat_images[i])
                entry.heat = base + heat
    return failures


def page_data(entries: Sequence[Entry], title: str, cull_command: str) -> dict:
    """What the page's script reads: every photo (failures too), in walk order."""
    photos = []
    for i, entry in enumerate(entries):
        r = entry.record
        pairs = getattr(r, "pairs", None) or {}
        photos.append({
            "index": i, "name": display(os.path.basename(r.path)), "where": display(r.path), "path": r.path, "status": r.status, "error": r.error,
            "score": r.score, "pairs": [pairs.get(n) for n in PAIR_NAMES] if pairs else None,
            "cached": bool(getattr(r, "cached", False)), "group": getattr(r, "group", None),
            "best": bool(getattr(r, "best", False)), "taken": entry.taken, "thumb": entry.thumb,
            "thumb_width": entry.thumb_size[0] if entry.thumb_size else None,
            "thumb_height": entry.thumb_size[1] if entry.thumb_size else None, "heat": entry.heat,
        })
    return {"title": title, "pairs": list(PAIR_NAMES), "cull_command": cull_command, "photos": photos}


def render_page(entries: Sequence[Entry], title: str = "qualiclip review", cull_command: str = "qualiclip cull") -> str:
    from qualiclip_cli.core.pipeline.report_page import PAGE

    data = json_dumps(page_data(entries, title, cull_command))
    # Nothing in the JSON may close the script element or start a comment: <, > and & as JSON escapes.
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return PAGE.replace("__TITLE__", html.escape(display(title))).replace("__DATA__", data)


def write_page(page: Path, entries: Sequence[Entry], title: str = "qualiclip review",
               cull_command: str = "qualiclip cull") -> None:
    """Write the page atomically (a half-written page is never left)."""
    from qualiclip_cli.core.atomic import atomic_write_text

    atomic_write_text(page, render_page(entries, title, cull_command))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(page, 0o666 & ~umask)  # readable like any file the user writes (the temporary file was private)
