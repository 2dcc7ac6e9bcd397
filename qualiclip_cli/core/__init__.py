"""Core library: model, weights, decoding, scoring, curation. Never prints, never imports the CLI."""
