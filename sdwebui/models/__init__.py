"""Checkpoint discovery, family detection, safe single-file and diffusers loading, ModelManager."""
