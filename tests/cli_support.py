"""Helpers for CLI tests: run the Typer app in-process or as a real subprocess; make small natural images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner


def jsonl_rows(text: str) -> list:
    """The objects of jsonl output, one per non-empty line."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run_cli(*args: str, env: dict | None = None):
    """In-process run; returns click's Result with separate .stdout and .stderr."""
    from qualiclip_cli.commands.app import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def run_process(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """A real `python -m qualiclip_cli` process (exit codes, stdout/stderr exactly as a user sees them)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "qualiclip_cli", *map(str, args)],
        capture_output=True, text=True, env=full_env, timeout=timeout,
    )


# Runs one CLI command in this process, then says on its last stderr line whether torch was ever imported.
_TORCH_PROBE = (
    "import sys\n"
    "from qualiclip_cli.commands.app import app\n"
    "try:\n"
    "    app(sys.argv[1:], prog_name='qualiclip')\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "else:\n"
    "    code = 0\n"
    "print('TORCH_IMPORTED=' + str('torch' in sys.modules), file=sys.stderr)\n"
    "raise SystemExit(code)\n"
)


def torch_probe(*args, env) -> tuple[subprocess.CompletedProcess, bool]:
    """A real process running one CLI command; also whether it ever imported torch."""
    full = {**os.environ, **env}
    done = subprocess.run([sys.executable, "-c", _TORCH_PROBE, *map(str, args)], capture_output=True, text=True,
                          env=full, timeout=120)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("TORCH_IMPORTED="), done.stderr
    return done, last == "TORCH_IMPORTED=True"


def natural_image(name: str = "astronaut", size: tuple[int, int] | None = (96, 72)) -> Image.Image:
    from skimage import data

    array = getattr(data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    image = Image.fromarray(array[..., :3].astype(np.uint8))
    return image.resize(size, Image.Resampling.BICUBIC) if size else image


def make_photo_dir(root: Path, names=("astronaut", "coffee", "chelsea", "rocket")) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        path = root / f"IMG_{i:04d}.jpg"
        natural_image(name).save(path, quality=92)
        paths.append(path)
    return paths
