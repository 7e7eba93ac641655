"""Turning a request into images, in layers that import only downwards.

- `planning/`  pure rules and their data (request -> GenerationPlan); no torch, diffusers or transformers
- `imaging/`   pixel rules on numpy and PIL: sizes, masks, outpaint, inpaint areas, tiles, stored inputs
- `models/`    model files on disk: loading, caches, downloads, LoRAs, upscalers, the safety checker, sdxl/ configs
- `diffusion/` the torch path: GenerationPlan -> images on diffusers (pipeline, sampling, guidance, img2img)
- `demo/`      tiny deterministic fixtures (checkpoint, LoRAs, upscaler, inpaint patch) for offline runs and tests
"""
