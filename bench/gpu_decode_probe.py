"""Probe: how fast can JPEGs be read, and decoded + resized on the GPU (qualiclip_cli.core.images.gpu_decode)?

    python bench/gpu_decode_probe.py FOLDER [--device cuda] [--max-side 1024] [--batch-sizes 8,32,64]
    python bench/gpu_decode_probe.py --make 128 FOLDER     # first writes 128 camera-like 12 MP JPEGs there

Times, over the JPEGs in FOLDER (page cache warm after the first pass):
  read       read_jpeg_bytes in a thread pool (file bytes + header, no pixels)
  decode     decode_jpeg(list, device) alone, bytes already in memory, per batch size
  decode+rs  decode_resize_batch (decode, EXIF orientation, antialiased bicubic to --max-side)
  pipeline   threads read while batches are decoded + resized, per batch size and reading-thread count
and prints a table of images/s at the end. Exits 0 even without CUDA (it says so). Not part of the tests.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_photos(folder: Path, count: int, size=(4000, 3000)) -> None:
    """Camera-like JPEGs (q=90): natural images upscaled with sensor-like noise; every 4th is EXIF-rotated."""
    import numpy as np
    from PIL import Image
    from skimage import data

    names = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "immunohistochemistry")
    folder.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        try:
            base = getattr(data, names[i % len(names)])()
        except Exception:
            base = data.astronaut()
        im = Image.fromarray(base[..., :3] if base.ndim == 3 else base).convert("RGB")
        w, h = im.size
        im = im.crop((int(w * 0.03 * (i % 5)), 0, w, h)).resize(size, Image.Resampling.BICUBIC)
        rng = np.random.default_rng(i)
        px = np.asarray(im).astype(np.int16) + rng.normal(0, 8.0, (size[1], size[0], 3)).astype(np.int16)
        exif = Image.Exif()
        exif[0x0112] = 6 if i % 4 == 3 else 1
        Image.fromarray(np.clip(px, 0, 255).astype(np.uint8)).save(
            folder / f"probe_{i:04d}.jpg", quality=92, exif=exif.tobytes())

    with ThreadPoolExecutor(os.cpu_count() or 4) as pool:
        list(pool.map(one, range(count)))


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, n_images: int, device, repeat: int) -> float:
    """Best images/s of ``repeat`` runs of fn() (fn handles n_images images)."""
    best = 0.0
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = max(best, n_images / (time.perf_counter() - t0))
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--batch-sizes", default="8,32,64")
    ap.add_argument("--threads", type=int, default=min(16, os.cpu_count() or 4), help="reading threads")
    ap.add_argument("--pipeline-threads", default="4,8,16", help="reading threads tried in the pipeline rows")
    ap.add_argument("--limit", type=int, default=256, help="at most this many files")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--make", type=int, default=0, help="first write this many 12 MP JPEGs into FOLDER")
    args = ap.parse_args()

    import torch

    from qualiclip_cli.core.images.gpu_decode import (
        JpegBytes,
        _decode,
        decode_resize_batch,
        quiet_torchvision_io,
        read_jpeg_bytes,
    )

    rows: list[tuple[str, str, str]] = []
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"CUDA is not available here (torch {torch.__version__}): nothing to measure on {args.device}.")
        return 0
    if args.make:
        t0 = time.perf_counter()
        make_photos(args.folder, args.make)
        print(f"wrote {args.make} JPEGs to {args.folder} in {time.perf_counter() - t0:.1f} s")
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[: args.limit]
    if not files:
        print(f"no JPEGs in {args.folder}")
        return 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{len(files)} JPEGs, {sum(f.stat().st_size for f in files) / len(files) / 1e6:.2f} MB each on average; "
          f"device {name}; torch {torch.__version__}; max_side {args.max_side}; {args.threads} reading threads")
    quiet_torchvision_io()

    pool = ThreadPoolExecutor(args.threads)
    try:
        read = list(pool.map(read_jpeg_bytes, files))  # also warms the page cache
        items = [(str(f), r) for f, r in zip(files, read) if isinstance(r, JpegBytes)]
        skipped = len(files) - len(items)
        if skipped:
            print(f"{skipped} files are not for the GPU decoder (fallback), e.g. {next(r for r in read if not isinstance(r, JpegBytes))}")
        if not items:
            return 0
        mp = sum(j.size[0] * j.size[1] for _, j in items) / len(items) / 1e6
        print(f"{mp:.1f} MP per image on average")
        rate = timed(lambda: list(pool.map(read_jpeg_bytes, files)), len(files), device, args.repeat)
        rows.append(("read (threads)", "-", f"{rate:8.1f}"))

        for bs in [int(b) for b in args.batch_sizes.split(",") if b.strip()]:
            batches = [items[i : i + bs] for i in range(0, len(items), bs)]
            try:
                _decode([j.data for _, j in batches[0]], device)  # warm-up (decoder creation, allocator)
                decode_resize_batch(batches[0], args.max_side, device)

                def decode_only():
                    for b in batches:
                        _decode([j.data for _, j in b], device)

                def decode_resize():
                    for b in batches:
                        out = decode_resize_batch(b, args.max_side, device)
                        bad = [r for r in out if not isinstance(r, torch.Tensor)]
                        if bad:
                            raise RuntimeError(f"{len(bad)} failed, e.g. {bad[0]}")

                def pipeline(threads: int):
                    with ThreadPoolExecutor(threads) as readers:
                        futures = [readers.submit(read_jpeg_bytes, f) for f in files]
                        batch = []
                        for f, fut in zip(files, futures):
                            r = fut.result()
                            if isinstance(r, JpegBytes):
                                batch.append((str(f), r))
                            if len(batch) == bs:
                                decode_resize_batch(batch, args.max_side, device)
                                batch = []
                        if batch:
                            decode_resize_batch(batch, args.max_side, device)

                for label, fn in (("decode", decode_only), ("decode+resize", decode_resize)):
                    rows.append((label, str(bs), f"{timed(fn, len(items), device, args.repeat):8.1f}"))
                for threads in [int(t) for t in args.pipeline_threads.split(",") if t.strip()]:
                    rate = timed(lambda: pipeline(threads), len(items), device, args.repeat)
                    rows.append((f"pipeline read+decode+resize, {threads} thr", str(bs), f"{rate:8.1f}"))
                if device.type == "cuda":
                    peak = torch.cuda.max_memory_allocated(device) / 2**30
                    rows.append(("  peak GPU memory (GiB)", str(bs), f"{peak:8.2f}"))
                    torch.cuda.reset_peak_memory_stats(device)
            except Exception as exc:
                traceback.print_exc()
                rows.append((f"batch {bs} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}", str(bs), "-"))
    finally:
        pool.shutdown()

    print(f"\n{'what':40} {'batch':>5} {'images/s':>9}")
    for what, bs, rate in rows:
        print(f"{what:40} {bs:>5} {rate:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
