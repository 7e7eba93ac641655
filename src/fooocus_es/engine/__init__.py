"""Turning a request into images, in layers; each imports only the layers listed above it.

- `planning/`  pure rules and their data (request -> GenerationPlan); no torch, diffusers or transformers
- `imaging/`   pixel rules on numpy and PIL: sizes, masks, outpaint, inpaint areas, tiles, stored inputs
- `models/`    model files on disk: loading, caches, downloads, LoRAs, upscalers, the safety checker, sdxl/ configs
- `diffusion/` the torch path: GenerationPlan -> images on diffusers (pipeline, sampling, guidance, img2img)
- `demo/`      tiny deterministic fixtures (checkpoint, LoRAs, upscaler, inpaint patch) for offline runs;
               beside the loaders, which write them on first use (tests/unit/test_engine_layers.py checks the rest)
"""
