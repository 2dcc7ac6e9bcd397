"""Peak memory of scoring huge images: four 17000×17000 (289 MP) RGB PNGs of under 1 MB each.

    python bench/decode_memory.py [--workers 1 4] [--count 4] [--side 17000] [--mode RGB] [-- EXTRA CLI ARGS]

Each PNG is written cheaply (a zlib stream of zero rows, so it decodes to a black 867 MB image) and the folder is
scored with `qualiclip score FOLDER --weights TINY --no-cache --workers N` in a child process, once per N; the
child's peak RSS (wait4's ru_maxrss), exit code, wall time and per-file outcome are printed. Only the current
code is measured; the README's Memory section records the figures of earlier versions.
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import zlib
from pathlib import Path

from common import REPO, run_cli

_BANDS = {"L": (0, 1), "RGB": (2, 3), "RGBA": (6, 4)}  # mode: (PNG colour type, bytes per pixel)


def black_png(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    """A valid 8-bit PNG of ``width``×``height`` zeros, compressed row by row (no big buffer)."""
    colour, bands = _BANDS[mode]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    comp = zlib.compressobj(9)
    row = bytes(1 + width * bands)  # filter byte 0 + the row's samples
    parts = [comp.compress(row) for _ in range(height)]
    data = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--side", type=int, default=17000)
    parser.add_argument("--mode", choices=sorted(_BANDS), default="RGB")
    parser.add_argument("extra", nargs="*", help="more CLI arguments, e.g. --decode-memory 1GB")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_weights import write_tiny_weights

    with tempfile.TemporaryDirectory(prefix="qualiclip-decode-memory-") as tmp:
        root = Path(tmp)
        weights = write_tiny_weights(root / "tiny.pth")
        folder = root / "huge"
        folder.mkdir()
        first = black_png(folder / "IMG_0.png", args.side, args.side, args.mode)
        for i in range(1, args.count):
            (folder / f"IMG_{i}.png").write_bytes(first.read_bytes())
        mp = args.side * args.side / 1e6
        print(f"{args.count} × {args.side}×{args.side} {args.mode} PNG ({mp:.0f} MP, {first.stat().st_size / 1e6:.2f} MB "
              f"each, {mp * _BANDS[args.mode][1]:.0f} MB decoded)", flush=True)
        for workers in args.workers:
            run = run_cli(f"workers={workers}", ["score", str(folder), "--weights", str(weights), "--no-cache",
                                                 "--workers", str(workers), "--format", "jsonl", *args.extra],
                          env={"QUALICLIP_HOME": str(root / "home")})
            print(f"--workers {workers}: peak RSS {run.peak_rss_mb:.0f} MB, exit {run.returncode}, "
                  f"{run.seconds:.1f} s", flush=True)
            for record in run.records:
                outcome = f"score {record['score']:.4f}" if record["status"] == "ok" else f"error: {record['error']}"
                print(f"    {Path(record['path']).name}: {outcome}")
            if not run.records:
                print("    " + run.stderr.strip().replace("\n", "\n    "))


if __name__ == "__main__":
    main()
