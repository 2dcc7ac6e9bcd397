"""RAW decoding: the embedded preview against a JPEG file of the same picture, and against LibRaw's half-size
development.

    python bench/raw.py [--side 6000] [--repeat 5] [--max-side 1024]

Three DNGs of a camera-sized sensor (``--side`` × 2/3 of it, 24 MP by default) are written with the tests' DNG
writer (tests/dng_support.py): one with a full-size JPEG preview, one with a ~1.6 MP preview (the size several
bodies embed), one with no preview at all. Each is decoded ``--repeat`` times, the
five decodes taking turns (the median is printed) through the
product's decoder at ``--max-side``:

* ``raw-preview``: `images.raw.decode_raw` on the DNG with a full-size preview (opening the RAW, extracting the
  preview, decoding it through the JPEG path);
* ``jpeg file``: `images.decode.decode_image` on that very preview written as a .jpg (the same pixels to decode):
  what the preview path should cost, at most plus the RAW's opening;
* ``raw-preview 1.6 MP`` and ``jpeg file 1.6 MP``: the same for the small preview;
* ``raw-demosaic``: the DNG without a preview, developed at half size.

Ratios are against the ``jpeg file`` row of the same run. Only the decode is timed: the forward pass that follows
is the same for the same scored size, whatever the source.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import REPO, _natural

sys.path.insert(0, str(REPO / "tests"))

from dng_support import write_dng  # noqa: E402


def _sensor(width: int, height: int) -> np.ndarray:
    base = Image.fromarray(_natural(0)).resize((width, height), Image.Resampling.BILINEAR)
    rng = np.random.default_rng(0)
    pixels = np.asarray(base).astype(np.int16) + rng.normal(0, 3.0, (height, width, 3)).astype(np.int16)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _interleaved_medians(fns, repeat: int) -> list[float]:
    """Median seconds of each function, the functions taking turns (a load that comes and goes hits them alike)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=6000, help="sensor width in px (height is 2/3 of it)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-side", type=int, default=1024)
    args = parser.parse_args()

    import rawpy

    from qualiclip_cli.core.images.decode import decode_image
    from qualiclip_cli.core.images.raw import decode_raw

    width = args.side - args.side % 2
    height = (args.side * 2 // 3) - (args.side * 2 // 3) % 2
    sensor = _sensor(width, height)
    small = np.asarray(Image.fromarray(sensor).resize((1616, round(1616 * height / width)), Image.Resampling.BILINEAR))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        full = write_dng(folder / "full.dng", sensor, preview=sensor)
        little = write_dng(folder / "small.dng", sensor, preview=np.ascontiguousarray(small))
        bare = write_dng(folder / "bare.dng", sensor)
        for dng, jpg in ((full, "full.jpg"), (little, "small.jpg")):
            with rawpy.imread(str(dng)) as raw:
                (folder / jpg).write_bytes(raw.extract_thumb().data)
        m = args.max_side
        rows = [
            ("jpeg file", lambda: decode_image(folder / "full.jpg", m), None),
            ("raw-preview", lambda: decode_raw(full, m), "raw-preview"),
            ("jpeg file 1.6 MP", lambda: decode_image(folder / "small.jpg", m), None),
            ("raw-preview 1.6 MP", lambda: decode_raw(little, m), "raw-preview"),
            ("raw-demosaic", lambda: decode_raw(bare, m), "raw-demosaic"),
        ]
        print(f"sensor {width}×{height} ({width * height / 1e6:.1f} MP), DNG {full.stat().st_size / 1e6:.0f} MB, "
              f"--max-side {m}, median of {args.repeat}")
        decoded = []
        for name, fn, source in rows:
            decoded.append(fn())  # warm-up, and the check that the path taken is the one named
            if source is not None:
                assert decoded[-1].source == source, (name, decoded[-1].source)
        medians = _interleaved_medians([fn for _, fn, _ in rows], args.repeat)
        for (name, _, _), seconds, d in zip(rows, medians, decoded):
            print(f"  {name:20s} {seconds * 1000:8.1f} ms   {seconds / medians[0]:5.2f}× jpeg file   "
                  f"scored {d.width}×{d.height}")


if __name__ == "__main__":
    main()
