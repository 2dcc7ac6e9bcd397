"""Bursts and near-duplicates: group scored photos by camera, capture time and embedding similarity.

Gap chaining, within each camera's time-ordered stream (`Signals.camera`, one stream per orientation too):
each photo is compared with the few photos just before it (`LOOKBACK`) and joins the group of the most similar
one it may link to, else starts a group of its own. A link needs

- a time gap of at most ``burst_gap`` and a similarity of at least ``burst_similarity``, or
- a time gap of at most ``scene_gap`` and a similarity of at least ``scene_similarity`` (stricter),

and a group never spans more than ``max_span`` from its first frame. A group spanning more than ``split_span``
whose weakest link is below ``scene_similarity`` is cut before each such weak link (a slow drift of frames
a second apart is several scenes, not one burst). Photos of different cameras, or one portrait and one
landscape, are never linked. Frames linked within ``burst_gap`` whose EXIF exposure bias differs are an
exposure bracket (`GroupInfo.bracket`): they are meant to be kept together and are never culled per group.

Within a group the photos are ranked by score (then path); the best has rank 1 and `margin`, its lead over
the runner-up. Group ids are stable: the first frame's capture time and a short hash of its camera, file
name and exact time, so the same photos give the same ids in every run and from any working folder.

Cost: one sort, then at most `LOOKBACK` dot products per photo: linear in the number of photos after the sort.
Records without signals (error rows) are in no group.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from qualiclip_cli.core.errors import UsageError
from qualiclip_cli.core.records import ScoreRecord

#: How many earlier photos of its stream each photo is compared with (a blurred frame or one of identical
#: timestamps in between does not break a burst).
LOOKBACK = 4

#: Provisional similarity defaults (cosine of the grouping embeddings), see the README's group section.
DEFAULT_BURST_SIMILARITY = 0.80
DEFAULT_SCENE_SIMILARITY = 0.90


@dataclass(frozen=True)
class GroupOptions:
    """Every threshold of the grouping; seconds for the gaps and spans, cosine similarity for the rest."""

    burst_gap: float = 2.0
    burst_similarity: float = DEFAULT_BURST_SIMILARITY
    scene_gap: float = 60.0
    scene_similarity: float = DEFAULT_SCENE_SIMILARITY
    max_span: float = 600.0
    split_span: float = 300.0

    def __post_init__(self) -> None:
        for name in ("burst_gap", "scene_gap", "max_span", "split_span"):
            value = getattr(self, name)
            if not _number(value) or value < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be a number of seconds >= 0, got {value!r}")
        for name, option in (("burst_similarity", "--burst-sim"), ("scene_similarity", "--scene-sim")):
            value = getattr(self, name)
            if not _number(value) or not -1 <= value <= 1:
                raise UsageError(f"{option} must be a cosine similarity in [-1, 1], got {value!r}")


@dataclass(frozen=True)
class GroupInfo:
    """One photo's place in its group. margin: the best's score minus the runner-up's (None for a single photo)."""

    group: str
    size: int
    rank: int
    best: bool
    margin: float | None
    bracket: bool


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def orientation(record: ScoreRecord) -> str:
    w, h = record.width or 0, record.height or 0
    return "portrait" if h > w else "landscape" if w > h else "square"


def group_records(records: Sequence[ScoreRecord], options: GroupOptions = GroupOptions()) -> list[GroupInfo | None]:
    """The group of each record (same order as ``records``); None for a record without signals or score."""
    import numpy as np

    records = list(records)
    streams: dict[tuple[str, str], list[int]] = {}
    for i, rec in enumerate(records):
        if rec.ok and rec.signals is not None and rec.score is not None and math.isfinite(rec.score):
            streams.setdefault((rec.signals.camera, orientation(rec)), []).append(i)
    result: list[GroupInfo | None] = [None] * len(records)
    used_ids: set[str] = set()
    for key in sorted(streams):
        order = sorted(streams[key], key=lambda i: (records[i].signals.capture_time, records[i].path))
        times = np.array([records[i].signals.capture_time for i in order], dtype=np.float64)
        vectors = _embeddings([records[i].signals.embedding for i in order])
        bias = [records[i].signals.exposure_bias for i in order]
        for members, bracket in _chain(times, vectors, bias, options):
            _rank([order[m] for m in members], {order[m] for m in bracket}, records, result, used_ids)
    return result


def _embeddings(blobs: list[bytes]):
    """(n, d) float32 rows; a row of another length than the first (another model) is zeros: never similar."""
    import numpy as np

    dim = len(blobs[0]) // 2 if blobs else 0
    out = np.zeros((len(blobs), dim), dtype=np.float32)
    for n, blob in enumerate(blobs):
        if len(blob) == 2 * dim:
            out[n] = np.frombuffer(blob, dtype="<f2")
    return out


def _chain(times, vectors, bias, options: GroupOptions) -> list[tuple[list[int], set[int]]]:
    """Gap chaining over one time-ordered stream: (members, bracket members) of each group, in stream order."""
    n = len(times)
    group_of = [0] * n
    link = [math.inf] * n  # similarity of the link that brought each photo in (inf: it started its group)
    starts: list[float] = []  # each group's first capture time
    groups: list[list[int]] = []
    bracket: set[int] = set()
    for i in range(n):
        best, best_sim = -1, -math.inf
        for j in range(i - 1, max(-1, i - 1 - LOOKBACK), -1):
            gap = times[i] - times[j]
            if gap > options.scene_gap:
                break
            if times[i] - starts[group_of[j]] > options.max_span:
                continue
            sim = float(vectors[i] @ vectors[j])
            if ((gap <= options.burst_gap and sim >= options.burst_similarity) or sim >= options.scene_similarity) \
                    and sim > best_sim:
                best, best_sim = j, sim
        if best < 0:
            group_of[i] = len(groups)
            starts.append(float(times[i]))
            groups.append([i])
            continue
        group_of[i] = group_of[best]
        groups[group_of[i]].append(i)
        link[i] = best_sim
        if times[i] - times[best] <= options.burst_gap and bias[i] is not None and bias[best] is not None \
                and bias[i] != bias[best]:
            bracket.update((i, best))
    out = []
    for members in groups:
        for piece in _split_weak(members, times, link, options):
            out.append((piece, bracket.intersection(piece) if len(piece) > 1 else set()))
    return out


def _split_weak(members: list[int], times, link: list[float], options: GroupOptions) -> list[list[int]]:
    """A group longer than ``split_span`` with a link below ``scene_similarity``: cut before each such link."""
    span = times[members[-1]] - times[members[0]]
    if span <= options.split_span or min(link[m] for m in members) >= options.scene_similarity:
        return [members]
    pieces: list[list[int]] = []
    for m in members:
        if not pieces or link[m] < options.scene_similarity:
            pieces.append([m])
        else:
            pieces[-1].append(m)
    return pieces


def _rank(members: list[int], bracket: set[int], records: list[ScoreRecord], result: list, used: set[str]) -> None:
    ranked = sorted(members, key=lambda i: (-records[i].score, records[i].path))
    first = min(members, key=lambda i: (records[i].signals.capture_time, records[i].path))
    group = _group_id(records[first], used)
    margin = records[ranked[0]].score - records[ranked[1]].score if len(ranked) > 1 else None
    for rank, i in enumerate(ranked, start=1):
        result[i] = GroupInfo(group=group, size=len(ranked), rank=rank, best=rank == 1,
                              margin=margin, bracket=i in bracket)


def _group_id(first: ScoreRecord, used: set[str]) -> str:
    """"<first frame's time, YYYYMMDD-HHMMSS>-<6 hex digits>"; a repeat (two copies of one folder) gets "-2"."""
    signals = first.signals
    try:
        stamp = datetime.fromtimestamp(math.floor(signals.capture_time), timezone.utc).strftime("%Y%m%d-%H%M%S")
    except (OverflowError, OSError, ValueError):
        stamp = "00000000-000000"
    name = os.path.basename(os.fsencode(first.path))
    digest = hashlib.sha256(b"\0".join([signals.camera.encode("utf-8", "surrogateescape"), name,
                                        repr(signals.capture_time).encode()])).hexdigest()[:6]
    group = candidate = f"{stamp}-{digest}"
    n = 1
    while candidate in used:
        n += 1
        candidate = f"{group}-{n}"
    used.add(candidate)
    return candidate


def select_per_group(records: Sequence[ScoreRecord], groups: Sequence[GroupInfo | None], criteria) -> list[ScoreRecord]:
    """What `cull --per-group` culls (a `selection.CullCriteria`): within each group of two or more photos,
    all but the best ``keep_top`` or the worst ``bottom_percent`` (rounded down), by ``criteria.by`` then path,
    and of those only the ones ``below`` selects too when it is given; a single photo only when ``below``
    selects it. Bracket frames are never selected. The broken files when ``criteria.unreadable``. Worst first."""
    from qualiclip_cli.core.curation.selection import unreadable, value_of

    broken = unreadable(records) if criteria.unreadable else []
    if not criteria.by_score:
        return broken
    by = criteria.by
    members: dict[str, list[ScoreRecord]] = {}
    info: dict[int, GroupInfo] = {}
    for rec, g in zip(records, groups):
        if g is not None and value_of(rec, by) is not None:
            members.setdefault(g.group, []).append(rec)
            info[id(rec)] = g
    chosen: list[ScoreRecord] = []
    for photos in members.values():
        order = sorted(photos, key=lambda r: (-value_of(r, by), r.path))
        if len(order) == 1:
            picked = order if criteria.below is not None else []
        elif criteria.keep_top is not None:
            picked = order[criteria.keep_top:]
        elif criteria.bottom_percent is not None:
            count = math.floor(len(order) * criteria.bottom_percent / 100)
            picked = order[len(order) - count:] if count else []
        else:
            picked = order
        if criteria.below is not None:
            picked = [r for r in picked if value_of(r, by) < criteria.below]
        chosen += [r for r in picked if not info[id(r)].bracket]
    return broken + sorted(chosen, key=lambda r: (value_of(r, by), r.path))


def grouped_order(records: Sequence[ScoreRecord], groups: Sequence[GroupInfo | None]) -> list[ScoreRecord]:
    """The records with each group together, best first; groups by their first frame's capture time (then id);
    records in no group (error rows) last, in their order."""
    members: dict[str, list[tuple[int, ScoreRecord]]] = {}
    first: dict[str, float] = {}
    rest = []
    for rec, g in zip(records, groups):
        if g is None:
            rest.append(rec)
            continue
        members.setdefault(g.group, []).append((g.rank, rec))
        first[g.group] = min(first.get(g.group, math.inf), rec.signals.capture_time)
    out = []
    for group in sorted(members, key=lambda k: (first[k], k)):
        out += [rec for _, rec in sorted(members[group], key=lambda m: m[0])]
    return out + rest


def group_keywords(records: Sequence[ScoreRecord], groups: Sequence[GroupInfo | None]) -> dict[int, tuple[str, ...]]:
    """What `tag --per-group` writes (id(record) -> keywords): ``qualiclip|group|<id>`` for each photo of a group
    of two or more, ``qualiclip|best`` for its best, ``qualiclip|bracket`` for an exposure bracket's frames."""
    out = {}
    for rec, g in zip(records, groups):
        if g is not None and g.size > 1:
            out[id(rec)] = (f"qualiclip|group|{g.group}",) + (("qualiclip|best",) if g.best else ()) + (
                ("qualiclip|bracket",) if g.bracket else ())
    return out
