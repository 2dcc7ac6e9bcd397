"""`explain_paths`: score files as `score` does and attribute each pair's logit to the trunk's grid.

The walk, the weights, the decoding policy, the precision and the per-file error rows are `score_paths`'s
(`run.walk_paths`, `weights.resolve_weights`, `scorer.Scorer`); the maps come from `model.attribution`. Files are
decoded with the Pillow decoder (the trunk's output is needed, so the results cache is neither read nor written):
the pair probabilities equal `score --details --decoder pillow`'s. Nothing here prints or writes files.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qualiclip_cli.core.errors import ImageError, first_line
from qualiclip_cli.core.images.discovery import Found, Skipped
from qualiclip_cli.core.model.weights import ProgressCallback
from qualiclip_cli.core.pipeline.options import ScoreOptions
from qualiclip_cli.core.pipeline.run import WalkOptions, walk_then_weights
from qualiclip_cli.core.records import PAIR_NAMES, STATUS_ERROR, STATUS_OK

#: The map of the score: the sum of the seven pairs' maps (the score is the mean of their probabilities).
SCORE_MAP = "score"
#: Scored pixels per grid cell.
STRIDE = 32


@dataclass
class Region:
    """One grid cell among the worst: its box in original-image pixels (after EXIF orientation), x0, y0, x1, y1
    with x1/y1 exclusive, and its value in the map."""

    box: tuple[int, int, int, int]
    value: float


@dataclass
class Explained:
    """One file's explanation. On error only path, status and error are set.

    ``maps[name]`` is a (rows, cols) float64 array with ``maps[name].sum() + constants[name] == logits[name]``
    for each pair name; ``pixels`` the scored image (H×W×3 uint8) while the ``on_explained`` callback runs, then
    dropped."""

    path: str
    status: str = STATUS_OK
    error: str | None = None
    score: float | None = None
    pairs: dict[str, float] | None = None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    logits: dict[str, float] = field(default_factory=dict)
    constants: dict[str, float] = field(default_factory=dict)
    maps: dict[str, Any] = field(default_factory=dict)
    worst: list[Region] = field(default_factory=list)
    pixels: Any = None

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def grid(self) -> tuple[int, int] | None:
        first = next(iter(self.maps.values()), None)
        return None if first is None else (int(first.shape[0]), int(first.shape[1]))

    @classmethod
    def failure(cls, path: str, reason: str) -> Explained:
        return cls(path=path, status=STATUS_ERROR, error=reason)

    def map_of(self, name: str):
        """The map of one pair, or of the score (`SCORE_MAP`: the sum over the pairs)."""
        if name == SCORE_MAP:
            return sum(self.maps[p] for p in PAIR_NAMES)
        return self.maps[name]


@dataclass
class ExplainRun:
    records: list[Explained]
    elapsed: float
    weights_sha256: str
    identity: str
    skipped: Skipped


def worst_regions(values, scored: tuple[int, int], original: tuple[int, int], k: int) -> list[Region]:
    """The ``k`` lowest cells of a (rows, cols) map as boxes in ``original`` (width, height) coordinates; the map
    was computed on an image of ``scored`` (width, height), each cell `STRIDE` px of it from the top-left."""
    import numpy as np

    rows, cols = values.shape
    sw, sh = scored
    ow, oh = original
    order = np.argsort(values, axis=None, kind="stable")[: max(0, k)]
    regions = []
    for flat in order:
        r, c = divmod(int(flat), cols)
        x0, y0, x1, y1 = c * STRIDE, r * STRIDE, min(sw, (c + 1) * STRIDE), min(sh, (r + 1) * STRIDE)
        box = (math.floor(x0 * ow / sw), math.floor(y0 * oh / sh), math.ceil(x1 * ow / sw), math.ceil(y1 * oh / sh))
        regions.append(Region(box=box, value=float(values[r, c])))
    return regions


def explain_paths(
    paths: Iterable[str | os.PathLike],
    *,
    walk: WalkOptions = WalkOptions(),
    options: ScoreOptions = ScoreOptions(),
    weights: str | os.PathLike | None = None,
    offline: bool = False,
    skip_under: Sequence[str | os.PathLike] = (),
    worst_of: str = SCORE_MAP,
    top_k: int = 3,
    on_start: Callable[[int], None] | None = None,
    on_explained: Callable[[Explained], None] | None = None,
    on_download_start: Callable[[Path, str], None] | None = None,
    on_download_progress: ProgressCallback | None = None,
    on_walk_problem: Callable[[Found], None] | None = None,
) -> ExplainRun:
    """Explain every image under ``paths``: one `Explained` per file found, failures included, in walk order.

    ``worst_of``: the map (a pair name or `SCORE_MAP`) whose ``top_k`` lowest cells become `Explained.worst`.
    ``on_explained(record)`` is called once per record, with the scored pixels still attached. The other
    arguments as in `run.score_paths`.
    """
    from dataclasses import replace

    from qualiclip_cli.core.model.attribution import attribute, pair_directions
    from qualiclip_cli.core.pipeline.scorer import Scorer

    found, skipped, resolved = walk_then_weights(paths, walk, skip_under, weights, offline, on_walk_problem,
                                                 on_download_start, on_download_progress)
    start = time.perf_counter()
    scorer = Scorer(resolved, replace(options, decoder="pillow", use_cache=False))
    directions = pair_directions(scorer.model)
    if on_start is not None:
        on_start(len(found))

    def load(entry: Found):
        return None if entry.error else scorer.decode_cpu(entry.path)

    records: list[Explained] = []
    with ThreadPoolExecutor(1, thread_name_prefix="decode") as pool:
        # One decode ahead of the model: the next file decodes while this one runs.
        futures = [pool.submit(load, entry) for entry in found[:1]]
        for i, entry in enumerate(found):
            if i + 1 < len(found):
                futures.append(pool.submit(load, found[i + 1]))
            record = _explain_one(scorer, entry, futures[i], directions, attribute, worst_of, top_k)
            futures[i] = None  # the pixels go once explained
            if on_explained is not None:
                on_explained(record)
            record.pixels = None
            records.append(record)
    return ExplainRun(records, time.perf_counter() - start, scorer.weights.sha256, scorer.identity, skipped)


def _explain_one(scorer, entry: Found, future, directions, attribute, worst_of: str, top_k: int) -> Explained:
    import numpy as np
    import torch

    display = str(entry.path)
    if entry.error:
        return Explained.failure(display, entry.error)
    try:
        decoded = future.result()
    except ImageError as exc:
        return Explained.failure(display, exc.reason)
    except Exception as exc:  # a decoder bug: one file, not the run
        return Explained.failure(display, f"could not decode: {type(exc).__name__}: {exc}")
    try:
        images = torch.from_numpy(decoded.pixels).permute(2, 0, 1)[None].to(scorer.runtime.device)
        result = attribute(scorer.model, images.contiguous(memory_format=torch.channels_last), directions)
    except RuntimeError as exc:
        return Explained.failure(display, f"scoring failed: {first_line(exc)}")
    score = float(result.scores[0])
    probs = [float(p) for p in result.pair_probs[0]]
    maps = result.maps[0].cpu().numpy()
    if not all(math.isfinite(v) for v in [score, *probs]) or not np.isfinite(maps).all():
        return Explained.failure(display, "the model produced NaN or an infinite value (damaged or diverged weights?)")
    record = Explained(
        path=display, score=score, pairs=dict(zip(PAIR_NAMES, probs)), width=decoded.width, height=decoded.height,
        original_width=decoded.original_width, original_height=decoded.original_height,
        logits={n: float(v) for n, v in zip(PAIR_NAMES, result.logits[0])},
        constants={n: float(v) for n, v in zip(PAIR_NAMES, result.constants[0])},
        maps={n: maps[i] for i, n in enumerate(PAIR_NAMES)}, pixels=decoded.pixels,
    )
    record.worst = worst_regions(record.map_of(worst_of), (decoded.width, decoded.height),
                                 (decoded.original_width, decoded.original_height), top_k)
    return record
