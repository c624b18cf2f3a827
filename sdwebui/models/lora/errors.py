"""Errors of the extra-network readers and the patch; each message names the file or module and the reason."""


class LoraError(Exception):
    """A LoRA/LyCORIS file could not be read, matched to the model or applied."""


class EmbeddingError(Exception):
    """A textual-inversion embedding file could not be read."""
