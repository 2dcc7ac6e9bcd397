"""What a scoring run may choose: `ScoreOptions`, the choice vocabularies, and their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from qualiclip_cli.core.model.runtime import Precision

#: The longest scored side by default (downscale only); 0 is native resolution, the reference's.
DEFAULT_MAX_SIDE = 1024
#: Native-resolution safety limit: a 12 MP photo needs ~4 GB in fp32; far larger ones would be killed for memory.
DEFAULT_NATIVE_MAX_PIXELS = 50_000_000

#: auto: batched JPEG decoding on the GPU (nvjpeg) with CUDA at a reduced size, Pillow otherwise.
Decoder = Literal["auto", "pillow", "nvjpeg"]
DECODERS: tuple[str, ...] = get_args(Decoder)


@dataclass(frozen=True)
class ScoreOptions:
    max_side: int = DEFAULT_MAX_SIDE  # 0 = native resolution (the reference)
    draft: bool = False  # JPEG DCT-scaled decoding when the result still covers the target size (opt-in, README)
    batch_size: int | None = None  # None: 1 on CPU (batching is slower there), 16 on GPU
    device: str = "auto"
    precision: Precision = "auto"
    workers: int | None = None  # decode threads; 0: decode inline; None: min(4, CPUs) on CPU, min(16, CPUs) on GPU
    use_cache: bool = True
    rescore: bool = False
    max_pixels: int | None = None  # None: DEFAULT_NATIVE_MAX_PIXELS at native resolution, no limit otherwise
    decoder: Decoder = "auto"  # see scorer.pick_decoder
    decode_memory: int | None = None  # bytes all decodes in flight may hold; None: policy.DEFAULT_DECODE_MEMORY
    # Grouping needs every record's signals (capture time, camera, embedding): a cached row without them (one
    # stored before schema 3) counts as a miss and is scored again. New scores always carry them.
    signals: bool = False
    # A personal profile (`model.profile`) whose prompt features replace the base's; its hash joins the identity.
    profile: str | None = None
