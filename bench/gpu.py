"""GPU benchmark (CUDA): end-to-end `qualiclip score` rates, decode-only and model-only ceilings, GPU memory,
and the score differences that decide the default precision on CUDA. Run through bench/gpu.sh.

    python bench/gpu.py OUT_DIR [--photos 48] [--copies 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, fill_folder, full_size_weights, make_photo, max_diff, run_cli  # noqa: E402

RESULTS: dict = {}
DEVICE = "cuda"  # --smoke runs every step on the CPU with tiny inputs, to check the script without a GPU
PHOTO_SIZE = (4000, 3000)
MODEL_SHAPES = (("fp16", 64, (768, 1024)), ("bf16", 64, (768, 1024)), ("fp32", 32, (768, 1024)),
                ("fp16", 8, (3000, 4000)), ("fp32", 4, (3000, 4000)))


def sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def reset_peak_memory() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb() -> float:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if DEVICE == "cuda" else float("nan")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def section(name):
    """Run one measurement; a failure is recorded and the script goes on to the next one."""
    def wrap(fn):
        def run(*args, **kwargs):
            log(f"{name} …")
            start = time.perf_counter()
            try:
                RESULTS[name] = fn(*args, **kwargs)
            except Exception as exc:  # keep going: one broken measurement must not cost the whole lease
                import traceback

                traceback.print_exc()
                RESULTS[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"{name} done in {time.perf_counter() - start:.1f} s")
        return run
    return wrap


def _make(args):
    path, size, index = args
    if not path.exists():
        make_photo(path, size, index)
    return path


def prepare(out: Path, n_photos: int, copies: int) -> tuple[Path, list[Path], Path]:
    src = out / "photos_12mp"
    jobs = [(src / f"IMG_{i:04d}.jpg", PHOTO_SIZE, i) for i in range(n_photos)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        unique = list(pool.map(_make, jobs))
    # Copies, not hard links: the walk scores each file (inode) once, so links would all count as one photo.
    many = fill_folder(out / "photos_12mp_many", [(p, f"c{c}_{p.name}") for c in range(copies) for p in unique],
                       distinct=True)
    weights = full_size_weights(out / "random_rn50_qualiclip.pth", calibrate_on=unique[:6])
    return many, unique, weights


@section("model-only ceiling")
def model_ceiling(weights: Path) -> dict:
    import torch

    from qualiclip_cli.core.model.inference import prepare_for_inference
    from qualiclip_cli.core.model.qualiclip import load_qualiclip

    res = {}
    for precision, batch, size in MODEL_SHAPES:
        reset_peak_memory()
        model = prepare_for_inference(load_qualiclip(weights), DEVICE, precision)
        x = torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8, device=DEVICE).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            for _ in range(3):
                model(x)
            sync()
            reps = 10 if size[0] < 1000 else 4
            start = time.perf_counter()
            for _ in range(reps):
                model(x)
            sync()
        seconds = time.perf_counter() - start
        res[f"{precision} {size[1]}x{size[0]} batch {batch}"] = {
            "images_per_s": round(batch * reps / seconds, 1), "peak_gpu_mem_gb": peak_memory_gb(),
        }
        del model, x
    return res


@section("decode-only ceiling")
def decode_ceiling(photos: list[Path]) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from qualiclip_cli.core.images.decode import decode_image

    res = {}
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(lambda p: decode_image(p, 1024), photos))
    res["pillow decode+resize, threads=cpus"] = round(len(photos) / (time.perf_counter() - start), 1)
    try:
        from qualiclip_cli.core.images import gpu_decode

        items = [gpu_decode.read_jpeg_bytes(p) for p in photos]
        for batch in (16, 64):
            pairs = [(p, j) for p, j in zip(photos, items)]
            gpu_decode.decode_resize_batch(pairs[:batch], 1024, DEVICE)
            sync()
            start = time.perf_counter()
            for i in range(0, len(pairs), batch):
                gpu_decode.decode_resize_batch(pairs[i:i + batch], 1024, DEVICE)
            sync()
            res[f"nvjpeg decode+resize, batch {batch} (bytes in memory)"] = round(len(items) / (time.perf_counter() - start), 1)
    except Exception as exc:
        res["nvjpeg"] = f"unavailable: {type(exc).__name__}: {exc}"
    return res


def cli(name, args, env):
    run = run_cli(name, args, env)
    ok = [r for r in run.records if r.get("status") == "ok"]
    summary = [line for line in run.stderr.splitlines() if line.startswith("qualiclip:")]
    return run, {"seconds": round(run.seconds, 2), "images": len(run.records), "ok": len(ok),
                 "images_per_s_end_to_end": round(len(run.records) / run.seconds, 1) if run.seconds else None,
                 "cli_summary": summary[-1] if summary else run.stderr.strip()[-400:], "exit": run.returncode,
                 "peak_host_rss_mb": round(run.peak_rss_mb)}


@section("end to end (qualiclip score)")
def end_to_end(many: Path, unique: list[Path], weights: Path, out: Path) -> dict:
    env = {"QUALICLIP_HOME": str(out / "home"), "QUALICLIP_OFFLINE": "1"}
    common = ["--format", "jsonl", "--no-cache", "--weights", str(weights), "--device", DEVICE]
    res, runs = {}, {}
    native = fill_folder(out / "native_subset", [(p, p.name) for p in unique[:32]])
    plans = [
        ("default policy, auto precision", [many] + (["--decoder", "nvjpeg"] if DEVICE == "cpu" else [])),
        ("default policy, auto precision, --decoder pillow", [many, "--decoder", "pillow"]),
        ("default policy, fp32", [native, "--precision", "fp32"]),
        ("default policy, fp16", [native, "--precision", "fp16"]),
        ("default policy, bf16", [native, "--precision", "bf16"]),
        ("native, fp32 (same-score)", [native, "--max-side", "0"]),
        ("native, fp16", [native, "--max-side", "0", "--precision", "fp16"]),
    ]
    for name, args in plans:
        runs[name], res[name] = cli(name, ["score", *args, *common], env)
    diffs = {
        "fp16 vs fp32, default policy": max_diff(runs["default policy, fp32"].scores, runs["default policy, fp16"].scores),
        "bf16 vs fp32, default policy": max_diff(runs["default policy, fp32"].scores, runs["default policy, bf16"].scores),
        "native fp16 vs native fp32": max_diff(runs["native, fp32 (same-score)"].scores, runs["native, fp16"].scores),
    }
    nv = {os.path.basename(r["path"])[3:]: r["score"] for r in runs["default policy, auto precision"].records if r["path"].startswith(str(many)) and "/c0_" in r["path"]}
    pil = {os.path.basename(r["path"])[3:]: r["score"] for r in runs["default policy, auto precision, --decoder pillow"].records if "/c0_" in r["path"]}
    diffs["auto decoder vs pillow decoder (auto precision)"] = max_diff(nv, pil)
    res["score differences"] = diffs
    return res


@section("GPU vs CPU reference (same-score mode)")
def gpu_vs_cpu(unique: list[Path], weights: Path) -> dict:
    import torch

    from qualiclip_cli.core.images.decode import decode_image
    from qualiclip_cli.core.model.inference import prepare_for_inference
    from qualiclip_cli.core.model.qualiclip import load_qualiclip

    from common import reference_scores

    subset = unique[:2]
    ref, _ = reference_scores(weights, subset)  # CPU, fp32, reference loop
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = prepare_for_inference(load_qualiclip(weights), DEVICE, "fp32")
    gpu = []
    with torch.inference_mode():
        for p in subset:
            x = torch.from_numpy(decode_image(p, 0).pixels).permute(2, 0, 1)[None].to(DEVICE)
            gpu.append(float(model(x).scores[0]))
    return {"max |gpu fp32 - cpu reference|": max(abs(a - b) for a, b in zip(ref, gpu))}


@section("fp16 autocast (the reference's GPU mode) vs fp32")
def autocast_vs_fp32(unique: list[Path], weights: Path) -> dict:
    """The same photos at the default policy scored three ways: fp32 (the strict mode), the whole model under
    fp16 autocast as the reference's inference runs on CUDA, and the product's fp16 (`--precision auto` on CUDA:
    the four residual stages in fp16, stem and pool fp32). On the CPU (--smoke) autocast runs in bf16."""
    import torch

    from qualiclip_cli.core.images.decode import decode_image
    from qualiclip_cli.core.model.inference import prepare_for_inference
    from qualiclip_cli.core.model.qualiclip import load_qualiclip

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    half = torch.float16 if DEVICE == "cuda" else torch.bfloat16
    strict = prepare_for_inference(load_qualiclip(weights), DEVICE, "fp32")
    product = prepare_for_inference(load_qualiclip(weights), DEVICE, "fp16" if DEVICE == "cuda" else "bf16")
    scores: dict[str, list[float]] = {"fp32": [], "autocast": [], "product": []}
    with torch.inference_mode():
        for path in unique[:16]:
            x = torch.from_numpy(decode_image(path, 1024).pixels).permute(2, 0, 1)[None].to(DEVICE)
            scores["fp32"].append(float(strict(x).scores[0]))
            with torch.autocast(device_type=DEVICE, dtype=half):
                scores["autocast"].append(float(strict(x).scores[0].float()))
            scores["product"].append(float(product(x).scores[0]))

    def diffs(a: str, b: str) -> list[float]:
        return [abs(u - v) for u, v in zip(scores[a], scores[b])]

    return {"photos": len(scores["fp32"]), "autocast dtype": str(half).removeprefix("torch."),
            "max |autocast - fp32|": max(diffs("autocast", "fp32")),
            "mean |autocast - fp32|": sum(diffs("autocast", "fp32")) / len(scores["fp32"]),
            "max |product auto - fp32|": max(diffs("product", "fp32")),
            "max |product auto - autocast|": max(diffs("product", "autocast")),
            "score spread (fp32)": max(scores["fp32"]) - min(scores["fp32"])}


@section("degradations on CUDA vs CPU")
def degradations_cuda() -> dict:
    import numpy as np
    import torch
    from skimage import data

    from training import degradations as D

    image = torch.from_numpy(np.asarray(data.chelsea()[:128, :128]).copy()).permute(2, 0, 1).float() / 255
    worst = {}
    for key in D.DISTORTIONS:
        cpu = D.apply_distortion(key, image, 4, torch.Generator().manual_seed(2))
        gpu = D.apply_distortion(key, image.to(DEVICE), 4, torch.Generator().manual_seed(2))
        worst[key] = round(float((gpu.cpu() - cpu).abs().mean()), 5)
    return {"max mean |cuda - cpu| over types": max(worst.values()), "per type": worst}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--photos", type=int, default=48)
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--smoke", action="store_true", help="check the script on the CPU with tiny inputs (no GPU)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    global DEVICE, PHOTO_SIZE, MODEL_SHAPES
    if args.smoke:
        DEVICE, PHOTO_SIZE = "cpu", (640, 480)
        MODEL_SHAPES = (("fp32", 1, (96, 128)),)
        args.photos, args.copies = min(args.photos, 4), min(args.copies, 2)
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (use --smoke to check the script on the CPU)", file=sys.stderr)
        return 1
    name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (smoke test)"
    RESULTS["device"] = {"name": name, "torch": torch.__version__, "cpus": os.cpu_count()}
    log(f"device {RESULTS['device']}")
    many, unique, weights = prepare(args.out / "data", args.photos, args.copies)
    log("data ready")
    end_to_end(many, unique, weights, args.out / "data")
    model_ceiling(weights)
    decode_ceiling(unique)
    gpu_vs_cpu(unique, weights)
    autocast_vs_fp32(unique, weights)
    degradations_cuda()
    (args.out / "gpu.json").write_text(json.dumps(RESULTS, indent=2, default=str))
    print_table(RESULTS)
    return 0


def print_table(results: dict) -> None:
    """The summary table, printed last: one row per measurement (nested keys joined)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"qualiclip GPU benchmark — {results.get('device', {}).get('name', '?')}")
    table.add_column("measurement")
    table.add_column("value", justify="right")

    def rows(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                if k != "per type":
                    yield from rows(f"{prefix} / {k}" if prefix else k, v)
        else:
            yield prefix, value

    for name, value in rows("", {k: v for k, v in results.items() if k != "device"}):
        table.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console(width=160).print(table)


if __name__ == "__main__":
    os.chdir(REPO)
    raise SystemExit(main())
