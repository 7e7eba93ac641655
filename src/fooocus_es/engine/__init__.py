"""Turning a GenerationPlan into images: pure planning rules, and the diffusers engine behind them."""
