"""Pure planning rules (no torch): request params -> GenerationPlan, with styles, wildcards, presets."""
