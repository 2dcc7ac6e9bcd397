"""CPU benchmark: the reference loop vs `qualiclip score` on the same real-size JPEGs, in one run.

    python bench/cpu.py [--out bench/out] [--quick]

Prints a table (images/s, s/image, peak RSS, speed-up, max score difference) and writes bench/out/cpu.json.
Full-size random RN50 weights in the QualiCLIP layout (batch-norm calibrated on the photos) stand in for the
real file: the cost is the real model's. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    fill_folder,
    full_size_weights,
    max_diff,
    photo_set,
    reference_scores,
    run_cli,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    ap.add_argument("--quick", action="store_true", help="fewer images (smoke test of the script)")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    n12 = 2 if args.quick else 12
    n_ref12 = 1 if args.quick else 2
    n3 = 2 if args.quick else 3

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log("preparing photos and weights …")
    photos12 = photo_set(out / "photos_12mp", n12, (4000, 3000))
    photos3 = photo_set(out / "photos_3mp", n3, (2048, 1536))
    weights = full_size_weights(out / "random_rn50_qualiclip.pth", calibrate_on=photos3 + photos12[:3])
    home = out / "home"
    env = {"QUALICLIP_HOME": str(home), "QUALICLIP_OFFLINE": "1"}
    common = ["--format", "jsonl", "--no-cache", "--weights", str(weights)]
    rows: list[dict] = []

    # Start-up (interpreter, imports, weights hash + load, one tiny forward): measured on one 64 px image and
    # subtracted to get the steady per-image cost of a long run (a library), reported beside end to end.
    tiny = out / "tiny" / "tiny.jpg"
    if not tiny.exists():
        from PIL import Image

        tiny.parent.mkdir(exist_ok=True)
        Image.new("RGB", (64, 48), (90, 120, 150)).save(tiny)
    startup = min(run_cli("start-up", ["score", tiny, *common], env).seconds for _ in range(2))

    def row(name, n, seconds, rss, note="", cli=True):
        steady = max(seconds - startup, 1e-9) / n if cli else seconds / n
        rows.append({"mode": name, "images": n, "seconds": round(seconds, 3), "s_per_image": round(seconds / n, 3),
                     "steady_s_per_image": round(steady, 3), "images_per_s": round(n / seconds, 3),
                     "steady_images_per_s": round(1 / steady, 3), "peak_rss_mb": round(rss, 1), "note": note})
        return steady

    # --- 2048×1536: reference vs same-score mode
    log("reference loop, 2048×1536 …")
    ref3, ref3_s = reference_scores(weights, photos3)
    row("reference loop 2048×1536", n3, ref3_s * n3, float("nan"), "in-process, excludes imports", cli=False)
    same3 = run_cli("same-score 2048×1536", ["score", out / "photos_3mp", "--max-side", "0", "--precision", "fp32", *common], env)
    same3_steady = row(same3.name, n3, same3.seconds, same3.peak_rss_mb, "CLI, end to end")
    ref3_by_name = {p.name: s for p, s in zip(photos3, ref3)}

    # --- 12 MP: reference vs same-score mode and the default policy
    log("reference loop, 12 MP …")
    ref12, ref12_s = reference_scores(weights, photos12[:n_ref12])
    row("reference loop 12 MP", n_ref12, ref12_s * n_ref12, float("nan"), "in-process, excludes imports", cli=False)
    ref12_by_name = {p.name: s for p, s in zip(photos12, ref12)}
    sub12 = fill_folder(out / "photos_12mp_ref", [(p, p.name) for p in photos12[:n_ref12]])
    log("same-score mode, 12 MP …")
    same12 = run_cli("same-score 12 MP", ["score", sub12, "--max-side", "0", "--precision", "fp32", *common], env)
    same12_steady = row(same12.name, n_ref12, same12.seconds, same12.peak_rss_mb, "CLI, end to end")
    log("default policy runs, 12 MP …")
    default_auto = run_cli("default (auto precision) 12 MP", ["score", out / "photos_12mp", *common], env)
    default_fp32 = run_cli("default fp32 12 MP", ["score", out / "photos_12mp", "--precision", "fp32", *common], env)
    draft = run_cli("default fp32 + --jpeg-draft", ["score", out / "photos_12mp", "--precision", "fp32", "--jpeg-draft", *common], env)
    bf16 = run_cli("default bf16 12 MP", ["score", out / "photos_12mp", "--precision", "bf16", *common], env)
    # fp16 on the CPU is slow, but its numerics (fp32 stem/pool, fp16 stages) are what auto uses on CUDA.
    fp16 = run_cli("default fp16 12 MP", ["score", out / "photos_12mp", "--precision", "fp16", *common], env)
    steady = {run.name: row(run.name, n12, run.seconds, run.peak_rss_mb, "CLI, end to end")
              for run in (default_auto, default_fp32, draft, bf16, fp16)}
    # A shoot-sized folder (each photo copied 3 times; no cache) for an end-to-end rate where the one-off
    # start-up weighs what it does in real use, not a third of the run as with 12 photos.
    shoot_dir = fill_folder(out / "photos_12mp_shoot",
                            [(p, f"{p.stem}_{copy}{p.suffix}") for copy in range(3) for p in photos12], distinct=True)
    n_shoot = 3 * n12
    log(f"default policy, {n_shoot} photos end to end …")
    shoot = run_cli(f"default, {n_shoot} × 12 MP end to end", ["score", shoot_dir, *common], env)
    if len(shoot.records) != n_shoot:
        raise SystemExit(f"the shoot run scored {len(shoot.records)} photos, expected {n_shoot}")
    row(shoot.name, n_shoot, shoot.seconds, shoot.peak_rss_mb, "CLI, end to end")
    one = run_cli("score one.jpg", ["score", photos12[0], *common], env)
    row(one.name, 1, one.seconds, one.peak_rss_mb, "one 12 MP photo, default policy, wall time", cli=False)

    # --- memory: flat in the number of files; a 200 MP image at native size
    log("memory checks …")
    small = photo_set(out / "small_2000", 2000 if not args.quick else 100, (160, 120), prefix="S")
    sub200 = fill_folder(out / "small_200", [(p, p.name) for p in small[:200 if not args.quick else 10]])
    mem200 = run_cli("200 small files", ["score", sub200, *common], env)
    mem2000 = run_cli("2000 small files", ["score", out / "small_2000", *common], env)
    huge = out / "huge" / "huge_200mp.jpg"
    if not huge.exists():
        from PIL import Image

        huge.parent.mkdir(exist_ok=True)
        Image.new("RGB", (16384, 12288), (120, 110, 100)).save(huge, quality=80)
    huge_run = run_cli("200 MP at --max-side 0", ["score", huge, "--max-side", "0", *common], env)

    # --- differences
    same3_diff = max_diff(ref3_by_name, same3.scores)
    same12_diff = max_diff(ref12_by_name, same12.scores)
    bf16_diff = max_diff(default_fp32.scores, bf16.scores)
    auto_diff = max_diff(default_fp32.scores, default_auto.scores)
    draft_diff = max_diff(default_fp32.scores, draft.scores)
    ratios = {
        "start_up_s": startup,
        "same_score_speedup_2048x1536_end_to_end": ref3_s / (same3.seconds / n3),
        "same_score_speedup_2048x1536_steady": ref3_s / same3_steady,
        "same_score_speedup_12mp_end_to_end": ref12_s / (same12.seconds / n_ref12),
        "same_score_speedup_12mp_steady": ref12_s / same12_steady,
        "default_auto_speedup_12mp_end_to_end": ref12_s / (default_auto.seconds / n12),
        "default_auto_speedup_12mp_steady": ref12_s / steady[default_auto.name],
        "default_auto_images_per_s_end_to_end": n12 / default_auto.seconds,
        "default_shoot_speedup_12mp_end_to_end": ref12_s / (shoot.seconds / n_shoot),
        "default_shoot_images_per_s_end_to_end": n_shoot / shoot.seconds,
        "default_auto_images_per_s_steady": 1 / steady[default_auto.name],
        "default_fp32_images_per_s_steady": 1 / steady[default_fp32.name],
        "default_bf16_images_per_s_steady": 1 / steady[bf16.name],
        "score_one_jpg_s": one.seconds,
    }
    diffs = {
        "same_score_vs_reference_2048x1536": same3_diff,
        "same_score_vs_reference_12mp": same12_diff,
        "bf16_vs_fp32_default_policy": bf16_diff,
        "fp16_vs_fp32_default_policy": max_diff(default_fp32.scores, fp16.scores),
        "auto_vs_fp32_default_policy": auto_diff,
        "jpeg_draft_vs_full_decode_fp32": draft_diff,
    }
    memory = {
        "default_policy_peak_rss_mb": max(default_auto.peak_rss_mb, default_fp32.peak_rss_mb, bf16.peak_rss_mb),
        "native_12mp_fp32_peak_rss_mb": same12.peak_rss_mb,
        "rss_200_files_mb": mem200.peak_rss_mb,
        "rss_2000_files_mb": mem2000.peak_rss_mb,
        "rss_growth_2000_vs_200": mem2000.peak_rss_mb / mem200.peak_rss_mb - 1,
        "huge_200mp_exit_code": huge_run.returncode,
        "huge_200mp_error": (huge_run.records[0]["error"] if huge_run.records else huge_run.stderr.strip()[-300:]),
        "huge_200mp_peak_rss_mb": huge_run.peak_rss_mb,
    }
    runs_ok = all(r.returncode == 0 for r in (same3, same12, default_auto, default_fp32, draft, bf16, fp16, shoot, one,
                                              mem200, mem2000))
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "rows": rows, "ratios": ratios, "score_differences": diffs, "memory": memory, "all_runs_ok": runs_ok,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (out / "cpu.json").write_text(json.dumps(result, indent=2))
    print_table(result)
    return 0 if runs_ok else 1


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=170)
    table = Table(title="qualiclip CPU benchmark", show_lines=False)
    for col in ("mode", "images", "s/image", "images/s", "steady s/image", "steady images/s", "peak RSS MB", "note"):
        table.add_column(col, justify="left" if col in ("mode", "note") else "right")
    for r in result["rows"]:
        rss = "—" if r["peak_rss_mb"] != r["peak_rss_mb"] else f"{r['peak_rss_mb']:.0f}"
        table.add_row(r["mode"], str(r["images"]), f"{r['s_per_image']:.3f}", f"{r['images_per_s']:.2f}",
                      f"{r['steady_s_per_image']:.3f}", f"{r['steady_images_per_s']:.2f}", rss, r["note"])
    console.print(table)
    for title, values in (("speed-ups and rates", result["ratios"]), ("max |score difference|", result["score_differences"]),
                          ("memory", result["memory"])):
        sub = Table(title=title, show_header=False)
        sub.add_column("what")
        sub.add_column("value", justify="right")
        for k, v in values.items():
            sub.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
        console.print(sub)


if __name__ == "__main__":
    raise SystemExit(main())
