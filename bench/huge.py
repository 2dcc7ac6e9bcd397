"""Huge JPEGs: decode + downscale to 1024 px, in full vs at a DCT scale (the default from 4× reductions), and the
pixel difference between the two, on scikit-image pictures upscaled to camera and panorama sizes.

    python bench/huge.py [--sizes 6000x4000,10328x7744] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, make_photo  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="4000x3000,6000x4000,10328x7744")
    ap.add_argument("--pictures", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args()
    from qualiclip_cli.core.images import decode as D

    real_rule = D.dct_request
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            w, h = map(int, size.split("x"))
            for index in range(args.pictures):
                path = make_photo(Path(tmp) / f"{size}_{index}.jpg", (w, h), index)
                timings = {}
                for name, rule in (("full", lambda *a: None), ("default", real_rule)):
                    D.dct_request = rule
                    start = time.perf_counter()
                    pixels = D.decode_image(path, 1024).pixels
                    timings[name] = (time.perf_counter() - start, pixels.astype(np.int16))
                D.dct_request = real_rule
                diff = np.abs(timings["full"][1] - timings["default"][1])
                rows[f"{size} #{index}"] = {"full_s": round(timings["full"][0], 2),
                                            "default_s": round(timings["default"][0], 2),
                                            "mean_abs_diff": round(float(diff.mean()), 3),
                                            "p99_abs_diff": float(np.percentile(diff, 99))}
                print(size, index, rows[f"{size} #{index}"], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "huge.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
