"""Diffusion-transformer families (Flux, SD3): key layouts, part files, tokenizers, quantized weights."""
