"""Shipped SDXL config folders (configs and CLIP tokenizer files, no weights) for offline loading."""
