"""Where the time of `qualiclip score one.jpg` goes: imports, weights load, decode, forward (CPU).

    python bench/startup.py [--out bench/out]

Each step runs in a fresh interpreter (so imports are cold for Python, warm for the OS page cache, as for a
user's second run), and the whole command is timed end to end as well.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, full_size_weights, photo_set  # noqa: E402

STEPS = r"""
import json, sys, time
t0 = time.perf_counter(); marks = {}
import typer, rich  # the CLI's own imports
from qualiclip_cli.commands import app
marks["import CLI"] = time.perf_counter()
import torch
marks["import torch"] = time.perf_counter()
from qualiclip_cli.core.model import weights as W
from qualiclip_cli.core.model.qualiclip import load_qualiclip
from qualiclip_cli.core.model.inference import prepare_for_inference
from qualiclip_cli.core.images.decode import decode_image
marks["import core"] = time.perf_counter()
digest = W.sha256_file(sys.argv[1])
marks["weights SHA-256"] = time.perf_counter()
model = prepare_for_inference(load_qualiclip(sys.argv[1]), "cpu", "fp32")
marks["weights load + prepare"] = time.perf_counter()
image = decode_image(sys.argv[2], 1024, draft=False)
marks["decode + resize"] = time.perf_counter()
x = torch.from_numpy(image.pixels).permute(2, 0, 1)[None]
with torch.inference_mode():
    model(x)
marks["forward fp32 1024 px"] = time.perf_counter()
prev, out = t0, {}
for name, t in marks.items():
    out[name] = round(t - prev, 3); prev = t
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = ap.parse_args()
    photo = photo_set(args.out / "photos_12mp", 1, (4000, 3000))[0]
    weights = full_size_weights(args.out / "random_rn50_qualiclip.pth", calibrate_on=[photo])
    start = time.perf_counter()
    steps = json.loads(subprocess.run([sys.executable, "-c", STEPS, str(weights), str(photo)], capture_output=True,
                                      text=True, check=True, cwd=REPO).stdout)
    in_process = time.perf_counter() - start
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "qualiclip_cli", "score", str(photo), "--weights", str(weights),
                               "--no-cache", "--format", "jsonl"], capture_output=True, text=True, cwd=REPO)
        runs.append(time.perf_counter() - start)
        assert proc.returncode == 0, proc.stderr
    result = {"steps_s": steps, "steps_total_s": round(sum(steps.values()), 3),
              "interpreter_with_steps_s": round(in_process, 3), "qualiclip_score_one_jpg_s": [round(r, 3) for r in runs]}
    (args.out / "startup.json").write_text(json.dumps(result, indent=2))
    for name, seconds in steps.items():
        print(f"{name:28s} {seconds:7.3f} s")
    print(f"{'sum of steps':28s} {result['steps_total_s']:7.3f} s")
    print(f"qualiclip score one.jpg (3 runs): {', '.join(f'{r:.2f} s' for r in runs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
