"""Flow-matching (rectified flow) sampling for the DiT families: schedules, samplers, guidance."""
