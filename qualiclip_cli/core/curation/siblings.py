"""Files that belong with a photo and must travel with it: XMP sidecars and RAW+JPEG siblings.

For a photo `DIR/IMG_1.jpg` (stem `IMG_1`), a sibling is a file in DIR whose name is the exact stem followed by
one of these endings (endings compared case-insensitively, the stem exactly):

- `.xmp`                      sidecar, Adobe naming (IMG_1.xmp, IMG_1.XMP)
- `.<photo ext>.xmp`          sidecar, appended naming (IMG_1.jpg.xmp, IMG_1.JPG.xmp)
- `.<raw ext>`                the RAW of a RAW+JPEG pair (IMG_1.CR2, IMG_1.nef, ...)
- `.<raw ext>.xmp`            the RAW's own sidecar (IMG_1.CR2.xmp)
- for a RAW photo (a pair scored from its RAW, or a RAW-only shoot): `.jpg`, `.heic`... and `.jpg.xmp`, the
  camera picture of its RAW+JPEG pair and that picture's sidecar (a camera picture that is itself scored in
  the same run, as with ``--raw-pairs both``, is a photo of its own, not a sibling: see `plan`)

Not siblings: other non-RAW formats with the same stem (IMG_1.png is a photo in its own right), and
darktable duplicate sidecars (IMG_1_01.CR2.xmp), which name a different version.
"""

from __future__ import annotations

import os
from pathlib import Path

from qualiclip_cli.core.filetypes import CAMERA_PICTURE_EXTENSIONS, RAW_EXTENSIONS

__all__ = ["RAW_EXTENSIONS", "SIDECAR_EXTENSION", "DirectoryIndex", "find_siblings", "renamed_sibling",
           "sibling_endings"]

SIDECAR_EXTENSION = "xmp"


# The endings every photo shares: its sidecar (Adobe naming), and each RAW with its own sidecar.
_COMMON_ENDINGS: frozenset[str] = frozenset(
    {"." + SIDECAR_EXTENSION} | {f".{raw}" for raw in RAW_EXTENSIONS}
    | {f".{raw}.{SIDECAR_EXTENSION}" for raw in RAW_EXTENSIONS}
)


# A RAW's camera pictures (the JPEG or HEIF of a RAW+JPEG pair, scored from the RAW) and their own sidecars.
_PAIRED_PICTURE_ENDINGS: frozenset[str] = frozenset(
    {f".{ext}" for ext in CAMERA_PICTURE_EXTENSIONS} | {f".{ext}.{SIDECAR_EXTENSION}" for ext in CAMERA_PICTURE_EXTENSIONS}
)


def sibling_endings(photo_suffix: str) -> frozenset[str]:
    """Lower-case name endings (after the stem) that mark a sibling of a photo with this suffix."""
    ext = photo_suffix.lower().lstrip(".")
    if not ext:
        return _COMMON_ENDINGS
    endings = _COMMON_ENDINGS | {f".{ext}.{SIDECAR_EXTENSION}"}
    return endings | _PAIRED_PICTURE_ENDINGS if ext in RAW_EXTENSIONS else endings


class DirectoryIndex:
    """Directory entries grouped by the stems they could belong to, each directory listed at most once.

    An entry named `<stem>.<a>` or `<stem>.<a>.<b>` is found under `stem`, which covers every sibling and
    sidecar ending (they have one or two dots). Planning many photos of one folder with one index lists
    the folder once instead of once per photo. Only for reading: it does not see later changes.
    """

    def __init__(self) -> None:
        self._by_directory: dict[Path, dict[str, list[os.DirEntry]]] = {}

    def candidates(self, directory: Path, stem: str) -> list[os.DirEntry]:
        """Entries of `directory` (in listing order) that may be `stem` plus an ending; none for a
        missing or unreadable directory."""
        by_stem = self._by_directory.get(directory)
        if by_stem is None:
            by_stem = self._by_directory[directory] = _group_by_stem(directory)
        return by_stem.get(stem, [])


def _group_by_stem(directory: Path) -> dict[str, list[os.DirEntry]]:
    groups: dict[str, list[os.DirEntry]] = {}
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return groups
    for entry in entries:
        for stem in {entry.name.rsplit(".", 1)[0], entry.name.rsplit(".", 2)[0]}:
            groups.setdefault(stem, []).append(entry)
    return groups


def find_siblings(photo: str | os.PathLike, index: DirectoryIndex | None = None) -> list[Path]:
    """The photo's siblings in its own directory, sorted by name; never the photo itself.

    Reads the directory once (not at all if `index` has listed it already); a missing directory gives no
    siblings. Symlinks and directories are ignored.
    """
    photo = Path(photo)
    stem, endings = photo.stem, sibling_endings(photo.suffix)
    directory = photo.parent
    found: list[Path] = []
    for entry in (index or DirectoryIndex()).candidates(directory, stem):
        name = entry.name
        if name == photo.name or not name.startswith(stem) or len(name) == len(stem):
            continue
        if name[len(stem):].lower() not in endings:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
        except OSError:
            continue
        found.append(directory / name)
    return sorted(found, key=lambda p: p.name)


def renamed_sibling(sibling_name: str, old_stem: str, new_stem: str) -> str:
    """The sibling's name after its photo's stem changes: IMG_1.CR2.xmp with IMG_1 -> IMG_1 (1) gives
    IMG_1 (1).CR2.xmp, so sidecars and RAWs keep pointing at their photo."""
    if not sibling_name.startswith(old_stem):
        raise ValueError(f"{sibling_name!r} does not start with the stem {old_stem!r}")
    return new_stem + sibling_name[len(old_stem):]
