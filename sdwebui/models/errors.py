"""The one error type the loader raises for bad checkpoint input."""


class CheckpointLoadError(Exception):
    """A checkpoint or VAE file could not be loaded; the message names the file and the reason."""
