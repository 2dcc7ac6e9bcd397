"""Personal profiles: the 14 prompt features of QualiCLIP's head, learned from a user's own ratings.

A profile is a small safetensors file (no pickle: loading it never runs code) holding one tensor,
``prompts_features`` (14, D), in the row order of `prompts.PROMPT_PAIRS`, and text metadata: the format
(`PROFILE_FORMAT`), the SHA-256 of the base weights it was learned on, and its provenance (photos, shoots,
held-out metrics, date, seed) as JSON. Scoring with a profile runs the base network unchanged and dots its
image embedding with these features instead of the base's: the score keeps its form (seven pair
probabilities, their mean), only what counts as good changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from qualiclip_cli.core.errors import WeightsError

PROFILE_FORMAT = "qualiclip-profile-1"
FEATURES_KEY = "prompts_features"
#: A profile is a few tens of KiB (14 x 1024 float32); anything far larger is not one and is never read.
PROFILE_SIZE_LIMIT = 16 << 20


@dataclass(frozen=True)
class Profile:
    path: Path
    sha256: str  # of the file: part of the scoring identity of the scores made with it
    base_sha256: str  # of the base weights it was learned on
    features: object  # torch.Tensor (14, D) float32
    provenance: dict = field(default_factory=dict)

    def check_base(self, weights_sha256: str, weights_path: os.PathLike | str) -> None:
        """Refuse to score with other base weights than the profile was learned on (its features are
        vectors in that network's embedding space only)."""
        if weights_sha256 != self.base_sha256:
            raise WeightsError(
                f"{self.path}: this profile was learned on base weights sha256 {self.base_sha256[:12]}…, not on "
                f"{weights_path} (sha256 {weights_sha256[:12]}…); use those weights (--weights) or train a "
                "profile on these")


def profile_identity(identity: str, profile_sha256: str | None) -> str:
    """The scoring identity of scores made with the profile of this SHA-256 (it joins the identity), so a score
    cached without it, or under another profile, is never served."""
    return identity if profile_sha256 is None else f"{identity}+profile:{profile_sha256}"


def save_profile(path: os.PathLike | str, features, base_sha256: str, provenance: dict) -> str:
    """Write a profile atomically (all or nothing); returns its SHA-256. A file already at ``path`` that is not
    a qualiclip profile is never replaced (WeightsError)."""
    import torch
    from safetensors.torch import save

    from qualiclip_cli.core.atomic import atomic_write_bytes

    if os.path.lexists(path):
        try:
            load_profile(path)
        except WeightsError:
            raise WeightsError(f"{path}: exists and is not a qualiclip profile; not replaced (choose another -o)") from None
    tensor = torch.as_tensor(features, dtype=torch.float32).contiguous().clone()
    metadata = {"format": PROFILE_FORMAT, "base_sha256": base_sha256,
                "provenance": json.dumps(provenance, sort_keys=True, allow_nan=False)}
    blob = save({FEATURES_KEY: tensor}, metadata=metadata)
    atomic_write_bytes(Path(path), blob)
    return hashlib.sha256(blob).hexdigest()  # the file's hash, from the bytes just written


def load_profile(path: os.PathLike | str, embed_dim: int | None = None) -> Profile:
    """Read and check a profile (WeightsError naming the file and the reason for anything else)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from qualiclip_cli.core.model.prompts import PROMPT_PAIRS

    path = Path(path)
    try:
        size = os.stat(path).st_size
        if size > PROFILE_SIZE_LIMIT:
            raise WeightsError(f"{path}: {size} bytes, too large to be a qualiclip profile")
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such profile file") from None
    except IsADirectoryError:
        raise WeightsError(f"{path}: is a folder, not a profile file") from None
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the profile ({exc.strerror or type(exc).__name__})") from None
    metadata = _metadata(data, path)
    if metadata.get("format") != PROFILE_FORMAT:
        raise WeightsError(f"{path}: not a qualiclip profile (format {metadata.get('format')!r}, "
                           f"expected {PROFILE_FORMAT})")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: damaged profile ({str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    features = tensors.get(FEATURES_KEY)
    rows = 2 * len(PROMPT_PAIRS)
    if features is None or features.ndim != 2 or features.shape[0] != rows:
        raise WeightsError(f"{path}: damaged profile (no {rows}-row {FEATURES_KEY} tensor)")
    if embed_dim is not None and features.shape[1] != embed_dim:
        raise WeightsError(f"{path}: profile features have {features.shape[1]} dimensions, the weights' "
                           f"embedding {embed_dim}")
    if not bool(features.float().isfinite().all()):
        raise WeightsError(f"{path}: damaged profile (NaN or infinite values)")
    base = metadata.get("base_sha256", "")
    if len(base) != 64:
        raise WeightsError(f"{path}: damaged profile (no base weights SHA-256)")
    try:
        provenance = json.loads(metadata.get("provenance", "{}"))
    except ValueError:
        provenance = {}

    return Profile(path=path, sha256=hashlib.sha256(data).hexdigest(), base_sha256=base,
                   features=features.float(), provenance=provenance if isinstance(provenance, dict) else {})


def _metadata(data: bytes, path: Path) -> dict:
    """The safetensors header's __metadata__, read without the tensors (a header that is not one: refused)."""
    if len(data) < 8:
        raise WeightsError(f"{path}: not a qualiclip profile (too short)")
    length = int.from_bytes(data[:8], "little")
    if length <= 0 or length > min(len(data) - 8, 1 << 20):
        raise WeightsError(f"{path}: not a qualiclip profile (not a safetensors file)")
    try:
        header = json.loads(data[8:8 + length])
    except ValueError:
        raise WeightsError(f"{path}: not a qualiclip profile (not a safetensors file)") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def describe(profile: Profile) -> list[str]:
    """The profile's provenance as display lines (`weights verify --profile`)."""
    p = profile.provenance
    lines = [f"base weights sha256 {profile.base_sha256}", f"profile sha256 {profile.sha256}"]
    if p.get("created"):
        lines.append(f"created {p['created']}")
    if "photos" in p:
        lines.append(f"learned from {p.get('photos')} rated photos in {p.get('shoots')} shoots "
                     f"({p.get('train_shoots')} trained on, {p.get('held_out_shoots')} held out), seed {p.get('seed')}")
    for side in ("base", "personal"):
        m = (p.get("held_out") or {}).get(side)
        if isinstance(m, dict):
            lines.append(f"held out, {side}: " + ", ".join(
                f"{k} {_num(m.get(k))}" for k in ("pairwise_accuracy", "srcc", "reject_auc")))
    return lines


def _num(value) -> str:
    return "n/a" if not isinstance(value, (int, float)) or not math.isfinite(value) else f"{value:.4f}"
