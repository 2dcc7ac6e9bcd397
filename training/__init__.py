"""Self-supervised QualiCLIP fine-tuning on pristine photos (the QualiCLIP paper's recipe)."""
