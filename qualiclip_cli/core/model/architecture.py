"""CLIP's ModifiedResNet image trunk (the RN50 family), with the exact state-dict layout of OpenAI/open_clip.

Why our own module instead of `open_clip.create_model("RN50-quickgelu")`: `import open_clip` costs about 4 s
on a 2-core machine (it pulls in torchvision, timm and the Hugging Face hub), which alone would blow the
budget of `qualiclip score one.jpg`. The trunk is small and fully determined by open_clip's RN50 config; the
tests check, on random weights, that this module and open_clip's `ModifiedResNet` have the same parameter
names and shapes and give the same features. open_clip is still used for the text tower (tokenizer and
prompt features), which scoring never needs because the weights file stores `prompts_features`.

The attention pool is run the QualiCLIP way (as the official implementation does): without its positional embedding, with the
spatial-mean token as the only query that matters. See `attention_pool`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VisualConfig:
    """Shape of a ModifiedResNet, read off a state dict (no hidden defaults)."""

    layers: tuple[int, int, int, int]
    width: int
    heads: int
    output_dim: int
    attnpool_tokens: int  # rows of attnpool.positional_embedding (unused at inference, kept for the layout)

    @property
    def embed_dim(self) -> int:
        return self.width * 32

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], prefix: str = "visual.") -> VisualConfig:
        layers = tuple(
            len({k[len(prefix):].split(".")[1] for k in sd if k.startswith(f"{prefix}layer{i}.")})
            for i in (1, 2, 3, 4)
        )
        width = sd[f"{prefix}layer1.0.conv1.weight"].shape[0]
        return cls(
            layers=layers,  # type: ignore[arg-type]
            width=int(width),
            heads=int(width * 32 // 64),  # CLIP's rule: one head per 64 channels of the trunk output
            output_dim=int(sd[f"{prefix}attnpool.c_proj.weight"].shape[0]),
            attnpool_tokens=int(sd[f"{prefix}attnpool.positional_embedding"].shape[0]),
        )


RN50 = VisualConfig(layers=(3, 4, 6, 3), width=64, heads=32, output_dim=1024, attnpool_tokens=50)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        # Anti-aliased stride: average-pool before the 1x1 convolution instead of a strided convolution.
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential()
            self.downsample.add_module("-1", nn.AvgPool2d(stride))
            self.downsample.add_module("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False))
            self.downsample.add_module("1", nn.BatchNorm2d(planes * self.expansion))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.act3(out + identity)


class AttentionPool(nn.Module):
    """Parameters of CLIP's AttentionPool2d (same names). The computation lives in `attention_pool`."""

    def __init__(self, tokens: int, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.zeros(tokens, embed_dim))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return attention_pool(self, x)


def attention_pool(pool: AttentionPool, x: torch.Tensor) -> torch.Tensor:
    """QualiCLIP's pooling of a (B, C, h, w) feature map to (B, output_dim), any h×w.

    Tokens are [mean, spatial...] with NO positional embedding. The reference runs every token as a query
    and keeps the first output; attention is per query, so only the mean token's query matters and this
    computes just that one. The key and value projections are folded into the single query so their cost is
    O(tokens · C · heads) instead of O(tokens · C²): per head h with query q_h,
      logits_i = q_h · (W_k,h t_i + b_k,h) = (W_k,hᵀ q_h) · t_i + q_h · b_k,h
      out_h    = Σ_i a_i (W_v,h t_i + b_v,h) = W_v,h (Σ_i a_i t_i) + b_v,h     (Σ_i a_i = 1)
    which is the same function as multi-head attention up to floating-point rounding.
    """
    b, c, hgt, wid = x.shape
    heads = pool.num_heads
    head_dim = c // heads
    tokens = x.flatten(2).transpose(1, 2)  # (B, N, C), N = h·w
    mean = tokens.mean(dim=1, keepdim=True)  # (B, 1, C)
    tokens = torch.cat([mean, tokens], dim=1)  # (B, N+1, C)

    q = F.linear(mean[:, 0], pool.q_proj.weight, pool.q_proj.bias) * head_dim**-0.5  # (B, C)
    q = q.view(b, heads, head_dim)
    w_k = pool.k_proj.weight.view(heads, head_dim, c)  # rows of W_k grouped by head
    k_folded = torch.einsum("bhd,hdc->bhc", q, w_k)  # (B, heads, C)
    k_bias = (q * pool.k_proj.bias.view(heads, head_dim)).sum(-1)  # (B, heads)
    logits = torch.einsum("bhc,bnc->bhn", k_folded, tokens) + k_bias[..., None]
    attn = logits.softmax(dim=-1)  # (B, heads, N+1)
    mixed = torch.einsum("bhn,bnc->bhc", attn, tokens)  # per-head weighted mean of tokens
    w_v = pool.v_proj.weight.view(heads, head_dim, c)
    values = torch.einsum("bhc,hdc->bhd", mixed, w_v) + pool.v_proj.bias.view(heads, head_dim)
    return F.linear(values.reshape(b, c), pool.c_proj.weight, pool.c_proj.bias)


def reference_attention_pool(pool: AttentionPool, x: torch.Tensor) -> torch.Tensor:
    """The reference computation, token for token (every token a query, first output kept).

    Used by the tests and the benchmark to show `attention_pool` gives the same result; never on the hot path.
    """
    tokens = x.flatten(2).permute(2, 0, 1)  # (N, B, C)
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
    out, _ = F.multi_head_attention_forward(
        query=tokens, key=tokens, value=tokens,
        embed_dim_to_check=tokens.shape[-1], num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False,
    )
    return out[0]


class ModifiedResNet(nn.Module):
    """3-conv stem + average pool, bottleneck stages, attention pool; keys equal CLIP's `visual.*`."""

    def __init__(self, cfg: VisualConfig):
        super().__init__()
        width = cfg.width
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.act3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        for stage, (blocks, planes) in enumerate(zip(cfg.layers, (width, width * 2, width * 4, width * 8)), 1):
            stride = 1 if stage == 1 else 2
            stage_blocks = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * Bottleneck.expansion
            stage_blocks += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{stage}", nn.Sequential(*stage_blocks))
        self.attnpool = AttentionPool(cfg.attnpool_tokens, cfg.embed_dim, cfg.heads, cfg.output_dim)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.act3(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        # The stages may run in a lower precision than the stem (see model.prepare_for_inference).
        stage_dtype = self.layer1[0].conv1.weight.dtype
        x = x.to(stage_dtype)  # the same tensor when it already is
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attnpool(self.trunk(x))
