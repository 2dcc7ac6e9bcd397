"""Training data: pristine photos → pairs of overlapping crops degraded at L levels with one distortion.

Reproducibility by construction: sample number g (counted over the whole run, g = step · batch + i) is a pure
function of (seed, g). Its photo comes from a per-epoch shuffle of the file list, its distortion from shuffled
rounds over the distortion types (balanced: every type equally often, distinct types within a batch as far as
possible), its crops and degradation parameters from generators seeded by (seed, g). So the batches do not
depend on the number of DataLoader workers, a resumed run sees exactly the batches an uninterrupted one would,
and under DistributedDataParallel each process simply takes its slice of the global batch.

Photos are decoded with the same decoder as `qualiclip score` (EXIF orientation applied, 16-bit and CMYK
converted, HEIC via pillow-heif) and by default downscaled like `score` does (longer side 1024 px), so the
crops show the scale at which the model later judges photos. Unreadable files are skipped with a warning.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.config import TrainConfig
from training.crops import crop_pair

# Salts that keep the random streams of (seed, g) independent of each other.
_SALT_EPOCH, _SALT_ROUND, _SALT_SAMPLE, _SALT_SKIP = 1, 2, 3, 4


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (NumPy SeedSequence: well mixed, stable across versions and platforms)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(*parts))


def permutation(n: int, *parts: int) -> list[int]:
    return torch.randperm(n, generator=generator(*parts)).tolist()


# ------------------------------------------------------------------------------------------- photos

def find_pristine(paths: Sequence[Path | str], recursive: bool = True, warn: Callable[[str], None] | None = None) -> list[Path]:
    """Image files under `paths` in the deterministic order of `find_images`; problems are warned about."""
    from qualiclip_cli.core.images.discovery import find_images

    files = []
    for found in find_images([Path(p) for p in paths], recursive=recursive):
        if found.error:
            (warn or _stderr_warning)(f"{found.path}: {found.error} (skipped)")
        else:
            files.append(Path(found.path))
    return files


def load_image(path: Path, max_side: int, draft: bool = True) -> torch.Tensor:
    """Decode like `score` does → C×H×W float32 in [0, 1]. Raises qualiclip_cli.core.errors.ImageError."""
    from qualiclip_cli.core.images.decode import decode_image

    decoded = decode_image(path, max_side, draft=draft)
    pixels = np.ascontiguousarray(decoded.pixels)
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)


def _stderr_warning(message: str) -> None:
    from qualiclip_cli.core.names import display

    print(f"qualiclip: warning: {display(message)}", file=sys.stderr, flush=True)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    return image.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


# ------------------------------------------------------------------------------------------- distortions

@dataclass(frozen=True)
class DistortionPlan:
    """Which distortion types a run draws from, and how."""

    keys: tuple[str, ...]
    balanced: bool = TrainConfig.balanced
    compose: int = TrainConfig.compose

    @classmethod
    def from_keys(
        cls, keys: Sequence[str] | None, balanced: bool = TrainConfig.balanced, compose: int = TrainConfig.compose
    ) -> DistortionPlan:
        from training.degradations import DISTORTIONS

        chosen = tuple(keys) if keys else tuple(DISTORTIONS)
        return cls(keys=chosen, balanced=balanced, compose=compose)

    def groups(self) -> dict[str, tuple[str, ...]]:
        from training.degradations import DISTORTIONS

        out: dict[str, list[str]] = {}
        for key in self.keys:
            out.setdefault(DISTORTIONS[key].group, []).append(key)
        return {g: tuple(v) for g, v in out.items()}

    def choose(self, seed: int, g: int, rng: torch.Generator) -> tuple[str, ...]:
        """The distortion key(s) of sample g: a balanced or uniform first type, then up to compose−1 more
        from other groups (all applied at the same level)."""
        n = len(self.keys)
        if self.balanced:
            first = self.keys[permutation(n, seed, _SALT_ROUND, g // n)[g % n]]
        else:
            first = self.keys[int(torch.randint(n, (1,), generator=rng).item())]
        if self.compose <= 1:
            return (first,)
        groups = self.groups()
        from training.degradations import DISTORTIONS

        others = [grp for grp in groups if grp != DISTORTIONS[first].group]
        extra = int(torch.randint(self.compose, (1,), generator=rng).item())  # 0 .. compose-1 more types
        extra = min(extra, len(others))
        chosen = [first]
        for idx in torch.randperm(len(others), generator=rng)[:extra].tolist():
            keys = groups[others[idx]]
            chosen.append(keys[int(torch.randint(len(keys), (1,), generator=rng).item())])
        return tuple(chosen)


def degrade(image: torch.Tensor, keys: Sequence[str], level: int, seed: int) -> torch.Tensor:
    """Apply the distortion(s) at `level` with a generator seeded by `seed` (same seed → same parameters)."""
    from training.degradations import apply_distortion, compose

    rng = torch.Generator().manual_seed(seed)
    if len(keys) == 1:
        return apply_distortion(keys[0], image, level, rng)
    return compose(image, list(keys), level, rng)


def degraded_levels(crop: torch.Tensor, keys: Sequence[str], levels: int, seed: int) -> torch.Tensor:
    """(L, C, H, W) float: the crop at levels 1..L. The same seed at every level, so random parameters (a
    motion-blur angle, a mean-shift sign, the noise pattern) stay fixed and only the intensity grows."""
    return torch.stack([degrade(crop, keys, level, seed) for level in range(1, levels + 1)])


# ------------------------------------------------------------------------------------------- dataset

class PristinePairs(torch.utils.data.Dataset):
    """Map-style dataset indexed by the global sample number g (any non-negative int).

    Item: dict(images=(2, L, 3, S, S) uint8 — crops A and B at levels 1..L —, distortion=str, image=int).
    """

    def __init__(
        self,
        files: Sequence[Path],
        *,
        seed: int,
        crop_size: int = TrainConfig.crop_size,
        max_offset: float = TrainConfig.max_offset,
        levels: int = TrainConfig.levels,
        plan: DistortionPlan,
        max_side: int = TrainConfig.max_side,
        cache_images: int = 32,
        warn: Callable[[str], None] | None = None,
    ):
        if not files:
            from qualiclip_cli.core.errors import UsageError

            raise UsageError("no pristine images to train on")
        self.files = [Path(f) for f in files]
        self.seed = seed
        self.crop_size = crop_size
        self.max_offset = max_offset
        self.levels = levels
        self.plan = plan
        self.max_side = max_side
        self.cache_images = cache_images
        self.warn = warn or _stderr_warning
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._bad: set[int] = set()
        self._perm: tuple[int, list[int]] | None = None

    def __len__(self) -> int:  # one epoch; indices beyond wrap into later epochs
        return len(self.files)

    # ----- photo choice
    def _epoch_order(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, permutation(len(self.files), self.seed, _SALT_EPOCH, epoch))
        return self._perm[1]

    def image_index(self, g: int) -> int:
        n = len(self.files)
        return self._epoch_order(g // n)[g % n]

    def _image(self, index: int) -> torch.Tensor | None:
        if index in self._bad:
            return None
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        from qualiclip_cli.core.errors import ImageError

        try:
            image = load_image(self.files[index], self.max_side)
        except ImageError as exc:
            self._bad.add(index)
            self.warn(f"{exc.path}: {exc.reason} (skipped)")
            return None
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop training
            self._bad.add(index)
            self.warn(f"{self.files[index]}: could not decode: {type(exc).__name__}: {exc} (skipped)")
            return None
        if self.cache_images > 0:
            self._cache[index] = image
            while len(self._cache) > self.cache_images:
                self._cache.popitem(last=False)
        return image

    def _readable(self, g: int) -> tuple[int, torch.Tensor]:
        """Photo of sample g; an unreadable one is replaced by a deterministic other choice."""
        index = self.image_index(g)
        image = self._image(index)
        if image is not None:
            return index, image
        for candidate in permutation(len(self.files), self.seed, _SALT_SKIP, g):
            image = self._image(candidate)
            if image is not None:
                return candidate, image
        from qualiclip_cli.core.errors import UsageError

        raise UsageError("none of the pristine images could be read")

    # ----- sample
    def __getitem__(self, g: int) -> dict:
        g = int(g)
        index, image = self._readable(g)
        rng = generator(self.seed, _SALT_SAMPLE, g)
        keys = self.plan.choose(self.seed, g, rng)
        crop_a, crop_b, _ = crop_pair(image, self.crop_size, self.max_offset, rng)
        level_seed = int(torch.randint(0, 2**62, (1,), generator=rng).item())
        images = torch.stack([
            to_uint8(degraded_levels(crop_a, keys, self.levels, level_seed)),
            to_uint8(degraded_levels(crop_b, keys, self.levels, level_seed)),
        ])
        return {"images": images, "distortion": "+".join(keys), "image": index}


def collate(items: list[dict]) -> dict:
    return {
        "images": torch.stack([it["images"] for it in items]),  # (B, 2, L, 3, S, S) uint8
        "distortion": [it["distortion"] for it in items],
        "image": torch.tensor([it["image"] for it in items]),
    }


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields, for steps start..steps−1, this process's slice of the global batch's sample numbers."""

    def __init__(self, start_step: int, steps: int, global_batch: int, rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            from qualiclip_cli.core.errors import UsageError

            raise UsageError(f"--batch-size {global_batch} must be a multiple of the number of processes ({world_size})")
        self.start_step, self.steps = start_step, steps
        self.global_batch, self.rank, self.world_size = global_batch, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        per = self.global_batch // self.world_size
        for step in range(self.start_step, self.steps):
            base = step * self.global_batch + self.rank * per
            yield list(range(base, base + per))

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # the degradations are many small ops: one thread per worker process


def make_loader(dataset: PristinePairs, sampler: StepBatchSampler, workers: int, pin_memory: bool = False):
    kwargs = {}
    if workers > 0:
        kwargs = dict(worker_init_fn=_worker_init, prefetch_factor=2, persistent_workers=False)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate, pin_memory=pin_memory, **kwargs
    )
