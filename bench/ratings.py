"""`qualiclip train --from-ratings` end to end on a scored library of 10,000 rated photos.

    python bench/ratings.py [--photos 10000] [--per-shoot 50]

What the issue asks: with a scored library (embeddings cached), training on 10,000 rated photos takes under a
minute on the 2-core CPU. The library is built without scoring it (that would take hours at full size here):

* full-size random RN50 weights in the QualiCLIP layout (`common.full_size_weights`, ~400 MB): the real embedding
  size (1024) and the real weights file to hash and read the prompt features from;
* ``--photos`` small JPEG files in folders (shoots) of ``--per-shoot``, each with an Adobe-named sidecar holding its
  star rating (1-5, and a reject in every tenth photo), the stars following a hidden direction of the embedding
  (so there is something to learn);
* the results cache filled with one row per photo (its score, a random unit embedding, the capture signals), under
  the identity a CPU run computes, as a scoring run would have left it.

Then ``qualiclip train --from-ratings DIR -o profile.pth --weights W --device cpu`` runs as a child process, and its
wall time is printed with the phases it reports (walking and reading the sidecars, gathering the cached embeddings
with no model pass, learning). Nothing is decoded: the run's summary says every photo came from the cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import REPO, full_size_weights

_SIDECAR = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="{rating}"/>
</rdf:RDF></x:xmpmeta>
"""


def build_library(root: Path, photos: int, per_shoot: int, weights: Path, home: Path) -> None:
    from qualiclip_cli.core.hashing import sha256_file
    from qualiclip_cli.core.pipeline.cache import FileIdentity, ResultsCache
    from qualiclip_cli.core.pipeline.options import ScoreOptions
    from qualiclip_cli.core.pipeline.scorer import planned_identities
    from qualiclip_cli.core.records import ScoreRecord, Signals

    rng = np.random.default_rng(0)
    hidden = rng.normal(size=1024)
    hidden /= np.linalg.norm(hidden)
    tile = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    identity, _ = planned_identities(ScoreOptions(device="cpu"))
    os.environ["QUALICLIP_HOME"] = str(home)
    from qualiclip_cli.core.paths import results_cache_path

    with ResultsCache(results_cache_path(), sha256_file(weights), identity, commit_every=2000) as cache:
        for i in range(photos):
            shoot = root / f"shoot_{i // per_shoot:04d}"
            shoot.mkdir(parents=True, exist_ok=True)
            photo = shoot / f"IMG_{i:05d}.jpg"
            tile.save(photo, quality=80)
            embedding = rng.normal(size=1024)
            embedding /= np.linalg.norm(embedding)
            taste = float(embedding @ hidden) * 30 + rng.normal(scale=0.5)
            rating = -1 if i % 10 == 9 else int(np.clip(np.round(3 + taste), 1, 5))
            (shoot / f"IMG_{i:05d}.xmp").write_text(_SIDECAR.format(rating=rating))
            ident = FileIdentity.of(photo)
            signals = Signals(float(i), f"2026-01-01T00:00:{i % 60:02d}+00:00", "exif", "", None,
                              embedding.astype("<f2").tobytes())
            cache.store(ident, ScoreRecord(path=str(photo), score=0.5, pairs={}, width=40, height=40,
                                           source="file", signals=signals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--per-shoot", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        weights = full_size_weights(tmp / "rn50.pth")
        build_library(tmp / "library", args.photos, args.per_shoot, weights, tmp / "home")
        print(f"library built in {time.perf_counter() - started:.1f} s: {args.photos} photos, "
              f"{-(-args.photos // args.per_shoot)} shoots", flush=True)
        env = {**os.environ, "QUALICLIP_HOME": str(tmp / "home"), "PYTHONPATH": str(REPO)}
        import subprocess

        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "qualiclip_cli", "train", "--from-ratings", str(tmp / "library"),
                               "-o", str(tmp / "profile.pth"), "--weights", str(weights), "--device", "cpu",
                               "--force"], capture_output=True, text=True, env=env, timeout=1800)
        wall = time.perf_counter() - start
        print(done.stderr.strip())
        print(f"exit {done.returncode}; train --from-ratings over {args.photos} cached photos: {wall:.1f} s wall")


if __name__ == "__main__":
    main()
