"""Fooocus's tools on the runner: describe-image (BLIP, WD14), generate_mask (rembg's models, GroundingDINO + SAM)."""
