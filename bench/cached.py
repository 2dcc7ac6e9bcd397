"""A fully cached pass against `qualiclip --help`: wall time of each, interleaved in one run (this machine is noisy).

    python bench/cached.py [--photos 2000] [--repeats 5] [--out bench/out]

The photos are small camera-like JPEGs (a cached pass reads none of their pixels, only their size and mtime), scored
once to fill the cache. The weights are tiny random ones installed as the official file (pinned in the cache dir,
as `qualiclip weights download` leaves it): a cached pass costs the same for the real 400 MB file, whose hash a
pinned, unchanged file no longer needs; with `--weights FILE` (not pinned) the file is hashed every run, which
the last row measures. Each run is a fresh interpreter; the table gives medians and the ratio to `--help`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, photo_set  # noqa: E402


def _wall(args: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "qualiclip_cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO)
    return time.perf_counter() - start, done


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_weights import write_tiny_weights

    work = Path(tempfile.mkdtemp(prefix="qualiclip-cached-"))
    try:
        home = work / "home"
        env = dict(os.environ, QUALICLIP_HOME=str(home), QUALICLIP_OFFLINE="1", PYTHONPATH=str(REPO))
        env.pop("QUALICLIP_WEIGHTS", None)
        weights = write_tiny_weights(work / "tiny.pth", seed=0)
        installed = home / "qualiclip.pth"  # as an install leaves it: the file and its SHA-256 pin
        home.mkdir(parents=True)
        shutil.copyfile(weights, installed)
        from qualiclip_cli.core.hashing import sha256_file

        (home / "qualiclip.pth.sha256").write_text(f"{sha256_file(installed)}  qualiclip.pth\n")
        photos = work / "photos"
        photo_set(photos, min(args.photos, 64), (320, 240))
        made = sorted(photos.glob("*.jpg"))
        for i in range(len(made), args.photos):  # distinct files (the walk scores each inode once)
            shutil.copyfile(made[i % len(made)], photos / f"COPY_{i:05d}.jpg")
        start = time.perf_counter()
        first, done = _wall(["score", photos, "-f", "csv", "-q"], env)
        assert done.returncode == 0, done.stderr
        print(f"first pass (scores {args.photos} photos): {first:.1f} s", file=sys.stderr)

        plans = {
            "qualiclip --help": ["--help"],
            f"cached score, {args.photos} photos (pinned weights)": ["score", photos, "-f", "csv", "-q"],
            f"cached score, {args.photos} photos, --weights FILE (hashed)": ["score", photos, "-f", "csv", "-q",
                                                                              "--weights", weights],
        }
        times: dict[str, list[float]] = {name: [] for name in plans}
        for _ in range(args.repeats):  # interleaved: a slow moment of the machine hits every row alike
            for name, plan in plans.items():
                seconds, done = _wall(plan, env)
                assert done.returncode == 0, (name, done.stderr)
                if plan[0] == "score":
                    rows = done.stdout.count("\n") - 1
                    assert rows == args.photos, (name, rows)
                times[name].append(seconds)
        help_median = statistics.median(times["qualiclip --help"])
        results = {"photos": args.photos, "repeats": args.repeats, "cpus": os.cpu_count(),
                   "first pass s": round(first, 2), "setup s": round(time.perf_counter() - start, 1), "rows": {}}
        print(f"{'run':64} {'median s':>9} {'x --help':>9}")
        for name, values in times.items():
            median = statistics.median(values)
            results["rows"][name] = {"median_s": round(median, 3), "min_s": round(min(values), 3),
                                     "ratio_to_help": round(median / help_median, 2)}
            print(f"{name:64} {median:9.3f} {median / help_median:9.2f}")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cached.json").write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
