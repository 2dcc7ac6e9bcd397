"""Self-supervised QualiCLIP fine-tuning on pristine photos (SPEC section 3)."""
