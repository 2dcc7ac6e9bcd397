"""The seven antonym prompt pairs of QualiCLIP, positive first, the CLIP mean/std and the fixed logit scale."""

PROMPT_PAIRS: tuple[tuple[str, str], ...] = (
    ("Good photo.", "Bad photo."),
    ("Sharp image.", "Blurry image."),
    ("Sharp edges.", "Blurry edges."),
    ("High-resolution image.", "Low-resolution image."),
    ("Noise-free image.", "Noisy image."),
    ("High-quality image.", "Low-quality image."),
    ("Good picture.", "Bad picture."),
)

# The sub-scores are named in the same order by records.PAIR_NAMES (the output vocabulary): overall, sharpness,
# edges, resolution, noise, quality, picture.

# Row order of `prompts_features` in the weights file: pos1, neg1, ..., pos7, neg7.
PROMPTS: tuple[str, ...] = tuple(text for pair in PROMPT_PAIRS for text in pair)



def split_prompts(sims):
    """(…, 14) similarities (or any values) in `PROMPTS` row order → (positive (…, 7), negative (…, 7))."""
    if sims.shape[-1] % 2:
        raise ValueError(f"expected an even number of prompts on the last axis, got {sims.shape[-1]}")
    return sims[..., 0::2], sims[..., 1::2]


# Fixed logit scale of the reference scorer (not the checkpoint's logit_scale).
LOGIT_SCALE = 100.0

# CLIP image normalisation.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Which embedding grouping compares (and the results cache keeps): "raw", the model's L2-normalised image
#: embedding, or "projected", the same with the 14 prompt directions projected out and normalised again
#: (`qualiclip.project_out_prompts`). bench/bursts.py found no difference between them on the tiny random model
#: (see the README's group section), so the simpler raw one; cached signals record the kind, so changing this
#: makes grouping score the library again rather than compare embeddings of two kinds.
GROUPING_EMBEDDING = "raw"
