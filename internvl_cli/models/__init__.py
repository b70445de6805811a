"""Step 0, models: presets, resolving a name to a local native checkpoint, converting and quantizing checkpoints."""
