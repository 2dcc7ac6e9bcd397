"""Dataset shards against the same images as files: samples/s of `dataset score` (WebDataset tar shards) and of
`score` (the images as JPEG files in a folder), same weights, same scoring options, no results cache.

    python bench/datasets.py [--count 48] [--shards 4] [--size 1600x1200] [--max-side 1024] [--repeat 3]

``--count`` camera-like JPEGs (bench/common.make_photo) are written as files and, the very same bytes, into
``--shards`` tar shards. Each path runs ``--repeat`` times, the two taking turns (the median is printed); a run is
timed from the start of scoring (the model built) to the last record, so both include the model's construction
alike and neither the walk nor the shard listing. Weights: full-size random RN50 weights (bench/common), so the
forward pass costs what the real model's does. Last column: the shards' rate over the files'.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tarfile
import tempfile
from pathlib import Path

from common import full_size_weights, photo_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--size", default="1600x1200")
    parser.add_argument("--max-side", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    from qualiclip_cli.core.dataset.run import DatasetOptions, score_shards
    from qualiclip_cli.core.pipeline.options import ScoreOptions
    from qualiclip_cli.core.pipeline.run import score_paths

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photos = photo_set(root / "files", args.count, (width, height))
        weights = full_size_weights(root / "weights.pth", calibrate_on=photos[:4])
        per = -(-len(photos) // args.shards)
        (root / "shards").mkdir()
        for s in range(args.shards):
            with tarfile.open(root / "shards" / f"{s:06d}.tar", "w") as tar:
                for photo in photos[s * per:(s + 1) * per]:
                    data = photo.read_bytes()
                    info = tarfile.TarInfo(photo.name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        options = ScoreOptions(max_side=args.max_side, device=args.device, use_cache=False, decoder="pillow")

        def files() -> float:
            run = score_paths([root / "files"], options=options, weights=weights, offline=True)
            assert all(r.ok for r in run.records)
            return run.elapsed

        def shards() -> float:
            run = score_shards([f"{root}/shards/*.tar"], root / "out", options=options, weights=weights,
                               offline=True, dataset=DatasetOptions(rescore=True))
            assert run.samples == len(photos) and run.failed_samples == 0
            return run.elapsed

        times: dict[str, list[float]] = {"files": [], "tar shards": []}
        for _ in range(args.repeat):
            times["files"].append(files())
            times["tar shards"].append(shards())
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.count} JPEGs {width}x{height}, max side {args.max_side}, {args.shards} shards, device "
          f"{args.device}, median of {args.repeat} interleaved runs")
    print(f"{'path':<12} {'seconds':>8} {'samples/s':>10} {'vs files':>9}")
    for name, seconds in medians.items():
        print(f"{name:<12} {seconds:8.2f} {len(photos) / seconds:10.2f} {medians['files'] / seconds:9.2f}")


if __name__ == "__main__":
    main()
