"""CLIP's text side (open_clip): tokenizer and text encoder, used to (re)compute `prompts_features`.

Scoring never needs this (the weights file stores the prompt features); training and the golden test do.
open_clip is imported here only, and only when called, because importing it takes seconds.
"""

from __future__ import annotations

import torch

from qualiclip_cli.core.model.prompts import PROMPTS


def clip_config_from_state_dict(clip_sd: dict[str, torch.Tensor]) -> dict:
    """open_clip CLIP(...) keyword arguments for an OpenAI-layout state dict (RN50 family)."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    from qualiclip_cli.core.model.architecture import VisualConfig

    visual = VisualConfig.from_state_dict(clip_sd, prefix="visual.")
    width = clip_sd["ln_final.weight"].shape[0]
    text_layers = len({k.split(".")[2] for k in clip_sd if k.startswith("transformer.resblocks.")})
    grid = round((visual.attnpool_tokens - 1) ** 0.5)
    return dict(
        embed_dim=int(clip_sd["text_projection"].shape[1]),
        vision_cfg=CLIPVisionCfg(layers=visual.layers, width=visual.width, image_size=grid * 32, patch_size=None),
        text_cfg=CLIPTextCfg(
            context_length=int(clip_sd["positional_embedding"].shape[0]),
            vocab_size=int(clip_sd["token_embedding.weight"].shape[0]),
            width=int(width),
            heads=max(1, int(width) // 64),
            layers=text_layers,
        ),
        quick_gelu=True,
    )


def build_open_clip(clip_sd: dict[str, torch.Tensor]):
    """A full open_clip CLIP (fp32, eval) holding these weights."""
    from open_clip.model import CLIP

    model = CLIP(**clip_config_from_state_dict(clip_sd))
    sd = {k: v.float() if v.is_floating_point() else v for k, v in clip_sd.items()}
    model.load_state_dict(sd, strict=True)
    return model.eval()


def tokenize_prompts(context_length: int = 77) -> torch.Tensor:
    from open_clip.tokenizer import tokenize

    return tokenize(list(PROMPTS), context_length=context_length)


@torch.no_grad()
def prompt_features(clip_model) -> torch.Tensor:
    """(14, D) L2-normalised text features of the 14 prompts, rows pos1, neg1, ..., pos7, neg7."""
    tokens = tokenize_prompts(clip_model.context_length)
    return torch.nn.functional.normalize(clip_model.encode_text(tokens).float(), dim=-1)
