"""qualiclip: photo curation with the QualiCLIP no-reference image-quality model."""

__version__ = "0.1.0"
