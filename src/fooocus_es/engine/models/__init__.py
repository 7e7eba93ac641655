"""Model files and loading: the checkpoint store and cache, LoRAs, upscalers, the safety checker."""
