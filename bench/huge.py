"""Huge JPEGs: decode + downscale to 1024 px, in full vs at a DCT scale (the default from 4× reductions), the pixel
difference between the two and the SCORE difference it causes, on scikit-image pictures upscaled to camera and
panorama sizes. For scale, `--jpeg-draft` (the DCT doing the whole reduction) is scored too, and the full path's
pixels with a ±1 grey-level dither of the same mean size (how much the model moves for that little).

    python bench/huge.py [--sizes 6000x4000,10328x7744] [--pictures 4] [--weights FILE | --tiny] [--out bench/out]
    python bench/huge.py --heic 16384x12288 [--tiny]   # a 200 MP HEIC: full decode vs its embedded thumbnail

--heic writes one HEIC of that size (x265's fastest preset, 512-px grid tiles, a 2048-px thumbnail as libheif
makes it) and times and scores its decode at 1024 px in full and from the thumbnail (the default from 4×).

Weights: full-size random CLIP RN50 weights with batch norm calibrated on the photos, as the other benchmarks
build them (bench/common.full_size_weights; cached under --out), unless --weights names a file or --tiny asks for
the golden tiny model. Scores: CPU, fp32, one image at a time, the product's own model preparation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, full_size_weights, make_photo  # noqa: E402


def load_model(path: Path):
    from qualiclip_cli.core.model.inference import prepare_for_inference
    from qualiclip_cli.core.model.qualiclip import load_qualiclip

    return prepare_for_inference(load_qualiclip(path), "cpu", "fp32")


def score(model, pixels: np.ndarray) -> float:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(pixels))[None].permute(0, 3, 1, 2)
    with torch.inference_mode():
        return float(model(x).scores.double()[0])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="4000x3000,6000x4000,10328x7744")
    ap.add_argument("--pictures", type=int, default=2)
    ap.add_argument("--weights", type=Path, help="a QualiCLIP weights file (default: full-size random RN50)")
    ap.add_argument("--tiny", action="store_true", help="the golden tiny random model (fast, less telling)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--heic", metavar="WxH", help="measure one HEIC of this size instead of the JPEGs")
    args = ap.parse_args()
    if args.heic:
        return heic(args)
    from qualiclip_cli.core.images import decode as D

    args.out.mkdir(parents=True, exist_ok=True)
    real_rule = D.dct_request
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        photos = []
        for size in args.sizes.split(","):
            w, h = map(int, size.split("x"))
            for index in range(args.pictures):
                photos.append((f"{size} #{index}", make_photo(Path(tmp) / f"{size}_{index}.jpg", (w, h), index)))
        weights, kind = pick_weights(args, [p for _, p in photos[:6]])
        model = load_model(weights)
        print(f"weights: {kind}", flush=True)
        for name, path in photos:
            decoded = {}
            for label, rule, draft in (("full", lambda *a: None, False), ("default", real_rule, False),
                                       ("draft", real_rule, True)):
                D.dct_request = rule
                start = time.perf_counter()
                pixels = D.decode_image(path, 1024, draft=draft).pixels
                decoded[label] = (time.perf_counter() - start, pixels)
            D.dct_request = real_rule
            scores = {label: score(model, pixels) for label, (_, pixels) in decoded.items()}
            # The model's own sensitivity, for scale: the full path's pixels with ±1 grey level flipped at random on
            # a fifth of the values (mean absolute change 0.2, about the DCT rule's).
            rng = np.random.default_rng(len(rows))
            noise = rng.choice(np.array([-1, 0, 1], np.int16), decoded["full"][1].shape, p=[0.1, 0.8, 0.1])
            dithered = np.clip(decoded["full"][1].astype(np.int16) + noise, 0, 255).astype(np.uint8)
            scores["dither"] = score(model, dithered)
            full = decoded["full"][1].astype(np.int16)
            diff = np.abs(full - decoded["default"][1].astype(np.int16))
            rows[name] = {"full_s": round(decoded["full"][0], 2),
                          "default_s": round(decoded["default"][0], 2),
                          "mean_abs_diff": round(float(diff.mean()), 3),
                          "p99_abs_diff": float(np.percentile(diff, 99)),
                          "score_full": round(scores["full"], 5),
                          "score_diff_default": round(scores["default"] - scores["full"], 5),
                          "score_diff_draft": round(scores["draft"] - scores["full"], 5),
                          "score_diff_dither": round(scores["dither"] - scores["full"], 5)}
            print(name, rows[name], flush=True)
    deltas = [abs(r["score_diff_default"]) for k, r in rows.items() if not k.startswith("4000x")]
    drafts = [abs(r["score_diff_draft"]) for k, r in rows.items() if not k.startswith("4000x")]
    dithers = [abs(r["score_diff_dither"]) for r in rows.values()]
    summary = {"weights": kind,
               "max_abs_score_diff_default": max(deltas, default=float("nan")),
               "mean_abs_score_diff_default": round(float(np.mean(deltas)), 5) if deltas else float("nan"),
               "max_abs_score_diff_draft": max(drafts, default=float("nan")),
               "mean_abs_score_diff_draft": round(float(np.mean(drafts)), 5) if drafts else float("nan"),
               "max_abs_score_diff_dither": max(dithers, default=float("nan")),
               "mean_abs_score_diff_dither": round(float(np.mean(dithers)), 5) if dithers else float("nan"),
               "score_spread": round(float(np.ptp([r["score_full"] for r in rows.values()])), 5)}
    print("summary", summary, flush=True)
    (args.out / "huge.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    return 0


def pick_weights(args, calibrate_on: list[Path]) -> tuple[Path, str]:
    if args.weights:
        return args.weights, f"file {args.weights.name}"
    if args.tiny:
        golden = Path(os.environ.get("QUALICLIP_GOLDEN_DIR", REPO.parent / "shared" / "golden"))
        return golden / "tiny_qualiclip.pth", "golden tiny random model"
    return (full_size_weights(args.out / "random_rn50_qualiclip.pth", calibrate_on=calibrate_on),
            "full-size random RN50 (batch norm calibrated on the photos)")


def heic(args) -> int:
    import pillow_heif
    from PIL import Image

    from qualiclip_cli.core.images import decode as D

    pillow_heif.register_heif_opener()
    Image.MAX_IMAGE_PIXELS = None  # the source picture is 200 MP; qualiclip's own decoder has its own limit
    w, h = map(int, args.heic.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        jpeg = make_photo(Path(tmp) / "src.jpg", (w, h), 0, quality=95)
        path = Path(tmp) / "huge.heic"
        start = time.perf_counter()
        with Image.open(jpeg) as im:
            im.save(path, quality=90, thumbnails=[2048], tile_size=512, enc_params={"preset": "ultrafast"})
        encode_s = time.perf_counter() - start
        print(f"encoded {w}x{h} in {encode_s:.0f} s, {path.stat().st_size / 1e6:.1f} MB", flush=True)
        weights, kind = pick_weights(args, [jpeg])
        model = load_model(weights)
        real_rule = D.thumbnail_request
        decoded = {}
        for label, rule in (("full", lambda *a: None), ("thumbnail", real_rule)):
            D.thumbnail_request = rule
            start = time.perf_counter()
            pixels = D.decode_image(path, 1024).pixels
            decoded[label] = (time.perf_counter() - start, pixels)
        D.thumbnail_request = real_rule
    diff = np.abs(decoded["full"][1].astype(np.int16) - decoded["thumbnail"][1].astype(np.int16))
    scores = {label: score(model, pixels) for label, (_, pixels) in decoded.items()}
    row = {"size": args.heic, "weights": kind, "encode_s": round(encode_s, 1),
           "full_s": round(decoded["full"][0], 2), "thumbnail_s": round(decoded["thumbnail"][0], 2),
           "mean_abs_diff": round(float(diff.mean()), 3), "p99_abs_diff": float(np.percentile(diff, 99)),
           "score_full": round(scores["full"], 5), "score_diff": round(scores["thumbnail"] - scores["full"], 5)}
    print(row, flush=True)
    (args.out / "huge_heic.json").write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
