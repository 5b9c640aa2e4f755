"""The toy world: a procedural long-tailed LVIS-format benchmark and a tiny text-to-image model for it."""
