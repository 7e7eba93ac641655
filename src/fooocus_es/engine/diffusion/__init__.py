"""The diffusion path on torch and diffusers: GenerationPlan -> images."""
