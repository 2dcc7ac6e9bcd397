"""Starting weights for training (`qualiclip train --init qualiclip|openai|FILE`).

- ``qualiclip`` (default): the official QualiCLIP weights, found or downloaded exactly as `score` does
  (`--weights`-style resolution: $QUALICLIP_WEIGHTS, the cache dir, a download). Fine-tuning adapts the model
  to the user's photos.
- ``openai``: OpenAI's CLIP RN50, to reproduce the paper's training from CLIP. Fetched in a safe format, the
  safetensors file that open_clip publishes on the Hugging Face hub (no pickle at all), with the same
  machinery as the QualiCLIP weights (temporary file, structural check, rename, SHA-256 pinned beside it,
  offline mode honoured), then converted in memory to the QualiCLIP layout with `prompts_features` computed
  by its text encoder.
- a path: any weights file in the QualiCLIP layout (e.g. the output of an earlier run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from qualiclip_cli.core.errors import OfflineError, WeightsError, first_line
from qualiclip_cli.core.model import layout
from qualiclip_cli.core.model import weights as W
from qualiclip_cli.core.model.layout import PROMPTS_KEY, split_weights
from qualiclip_cli.core.paths import native_name

# Keys of an OpenAI-layout CLIP state dict (open_clip's CLIP uses the same names).
_CLIP_KEY_PREFIXES = ("visual.", "transformer.", "token_embedding.", "ln_final.")
_CLIP_KEYS = ("positional_embedding", "text_projection", "logit_scale")


def _check_clip_safetensors(path: Path, origin: str, spec: W.WeightsSpec) -> None:
    """A CLIP state dict in safetensors whose image encoder builds our ModifiedResNet (shapes pinned)."""
    clip_sd = load_clip_safetensors(path)
    out_dim = clip_sd["visual.attnpool.c_proj.weight"].shape[0] if "visual.attnpool.c_proj.weight" in clip_sd else 1
    # prompts_features is not in a CLIP file (computed after the check): zeros of the right shape stand in.
    layout.validate_weights(layout.join_weights(clip_sd, torch.zeros(14, out_dim)), origin, spec.expected_shapes)
    for key in ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection"):
        if key not in clip_sd:
            raise WeightsError(f"{origin}: text encoder tensor {key} missing: not a CLIP weights file")


OPENAI_RN50 = W.WeightsSpec(
    name="openai-clip-rn50",
    url="https://huggingface.co/timm/resnet50_clip.openai/resolve/main/open_clip_model.safetensors",
    filename="openai-clip-rn50.safetensors",
    license="MIT (OpenAI CLIP)",
    citation="A. Radford et al. Learning Transferable Visual Models From Natural Language Supervision. ICML 2021",
    expected_shapes={k: v for k, v in W.QUALICLIP.expected_shapes.items() if k != PROMPTS_KEY},
    url_env="QUALICLIP_CLIP_URL",
    check=_check_clip_safetensors,
    title="OpenAI CLIP RN50",
    # `qualiclip weights import` installs QualiCLIP files only: this one is placed by hand, and checked and pinned
    # on first use.
    install="save it as {dest}",
    reinstall="delete {dest} and {record}: the next run downloads it again (offline: save a good copy as {dest})",
)


def load_clip_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """OpenAI-layout CLIP state dict from a safetensors file (open_clip's hub format)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        with native_name(path) as name:  # safetensors opens the file by a UTF-8 name
            raw = load_file(name, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
    return clip_state_dict(raw, origin=str(path))


def clip_state_dict(raw: dict[str, torch.Tensor], origin: str = "weights") -> dict[str, torch.Tensor]:
    """Keep the CLIP tensors (dropping a `module.` prefix and non-tensor or unrelated entries)."""
    out = {}
    for key, value in raw.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(_CLIP_KEY_PREFIXES) or key in _CLIP_KEYS:
            out[key] = value
    if not any(k.startswith("visual.") for k in out):
        raise WeightsError(f"{origin}: no image encoder tensors (visual.*): not a CLIP weights file")
    return out


def compute_prompt_features(clip_sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """The 14 prompt features from the (frozen) text encoder of this CLIP state dict."""
    from qualiclip_cli.core.model.text_tower import build_open_clip, prompt_features

    return prompt_features(build_open_clip(clip_sd))


@dataclass(frozen=True)
class InitWeights:
    clip_sd: dict[str, torch.Tensor]  # OpenAI-layout CLIP state dict (text tower untouched by training)
    source: str  # "qualiclip", "openai" or "file"
    path: Path
    sha256: str

    def describe(self) -> dict:
        return {"source": self.source, "path": str(self.path), "sha256": self.sha256}


def resolve_openai(offline: bool = False, progress: W.ProgressCallback | None = None, spec: W.WeightsSpec = OPENAI_RN50) -> W.ResolvedWeights:
    cached = W.cached_weights_path(spec)
    if cached.exists():
        return W.ResolvedWeights(cached, W.verify_recorded_hash(cached, spec), "cache")
    if W.offline_requested(offline):
        raise OfflineError(
            f"{spec.title} weights are not in {cached.parent} and offline mode is on: download "
            f"{spec.download_url} on a connected machine and {spec.install_hint(cached)}"
        )
    return W.downloaded(W.download_weights(spec=spec, progress=progress))


def load_init(
    init: str,
    offline: bool = False,
    progress: W.ProgressCallback | None = None,
    openai_spec: W.WeightsSpec = OPENAI_RN50,
) -> InitWeights:
    """Resolve (download if needed) and load the starting weights as a CLIP state dict."""
    if init == "qualiclip":
        resolved = W.resolve_weights(None, offline, progress=progress, file_option="--init")
        weights = layout.load_weights_dict(resolved.path, mmap=False)
        layout.validate_weights(weights, resolved.path)
        clip_sd, _ = split_weights(weights)
        return InitWeights(clip_sd, "qualiclip", resolved.path, resolved.sha256)
    if init == "openai":
        resolved = resolve_openai(offline, progress, openai_spec)
        return InitWeights(load_clip_safetensors(resolved.path), "openai", resolved.path, resolved.sha256)
    path = Path(init).expanduser()
    if not path.is_file():
        raise WeightsError(f"--init {init}: not 'qualiclip', 'openai' or an existing weights file")
    if path.suffix == ".safetensors":
        clip_sd = load_clip_safetensors(path)
    else:
        weights = layout.load_weights_dict(path, mmap=False)
        layout.validate_weights(weights, path)
        clip_sd, _ = split_weights(weights)
    return InitWeights(clip_sd, "file", path, W.sha256_file(path))


def bn_stats_untrained(clip_sd: dict[str, torch.Tensor]) -> bool:
    """True when every batch-norm of the image encoder still has its initial statistics (mean 0, variance 1):
    the encoder has never seen data, i.e. training starts from a random model."""
    visual = layout.visual_state_dict(clip_sd)
    means = [v for k, v in visual.items() if k.endswith("running_mean")]
    variances = [v for k, v in visual.items() if k.endswith("running_var")]
    if not means:
        return False
    return all(bool((m == 0).all()) for m in means) and all(bool((v == 1).all()) for v in variances)

