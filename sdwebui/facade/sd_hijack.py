"""A1111's `modules.sd_hijack`: `model_hijack` with the attributes extensions read.

A1111 patches its LDM model in place ("hijacks" it) for textual inversion, emphasis and attention; our
engine does those itself on diffusers modules, so there is nothing to apply or undo: `hijack(model)` and
`undo_hijack(model)` leave the model as it is. `model_hijack.embedding_db` is the app's textual-inversion
library (A1111's names: `word_embeddings` fit the current model, `skipped_embeddings` do not).
"""

from __future__ import annotations

from typing import Any

from sdwebui.facade import shared


class EmbeddingView:
    """A1111's `Embedding` names over one of ours (`filename`, `vec`, `shape`, `vectors`, `step`, ...)."""

    def __init__(self, embedding: Any):
        self._embedding = embedding
        self.name, self.filename = embedding.name, str(embedding.path)
        tensors = embedding.vectors_by_encoder
        self.vec = tensors[""] if set(tensors) == {""} else dict(tensors)  # SDXL: {"clip_l", "clip_g"}

    def __getattr__(self, key: str) -> Any:
        return getattr(self._embedding, key)


class EmbeddingDatabase:
    """A live view of the app's embedding files, split for the current model."""

    def _library(self) -> Any:
        library = getattr(shared._services, "embeddings", None)
        if library is None:
            raise RuntimeError("sd_hijack.model_hijack.embedding_db: the app is not bound yet")
        return library

    def _split(self) -> tuple[dict[str, Any], dict[str, Any]]:
        library = self._library()
        model = shared.current_model()
        if model is None:
            return library.all(), {}
        split = library.for_model(getattr(model, "loaded_model", model))
        return split.loaded, split.skipped

    @property
    def word_embeddings(self) -> dict[str, EmbeddingView]:
        return {name: EmbeddingView(e) for name, e in self._split()[0].items()}

    @property
    def skipped_embeddings(self) -> dict[str, EmbeddingView]:
        return {name: EmbeddingView(e) for name, e in self._split()[1].items()}

    @property
    def embedding_dirs(self) -> dict[str, Any]:
        return {str(d): d for d in self._library().dirs}

    def load_textual_inversion_embeddings(self, force_reload: bool = False, sync_with_sd_model: bool = True):
        """Re-read the embedding folders (new, changed and removed files are seen)."""
        self._library().refresh()


class StableDiffusionModelHijack:
    optimization_method = "sdp"  # diffusers' scaled-dot-product attention (A1111's name for it)
    circular_enabled = False
    layers = None
    clip = None

    def __init__(self) -> None:
        self.comments: list[str] = []  # A1111 shows them under the result; ours are not shown
        self.extra_generation_params: dict[str, Any] = {}
        self.embedding_db = EmbeddingDatabase()

    def hijack(self, m: Any) -> None:
        """Nothing to patch: the engine applies embeddings, emphasis and attention itself."""

    def undo_hijack(self, m: Any) -> None:
        """Nothing was patched, so nothing to undo."""

    def clear_comments(self) -> None:
        self.comments = []
        self.extra_generation_params = {}

    def get_prompt_lengths(self, text: str) -> tuple[int, int]:
        """(tokens, limit) as A1111's prompt token counter shows them (75 per chunk)."""
        from sdwebui.engine.conditioning import clip_token_counter

        services = shared._services
        counter = services.token_counter() if hasattr(services, "token_counter") else clip_token_counter
        tokens = counter(text, 1, True)
        return tokens, max(75, -(-tokens // 75) * 75)


model_hijack = StableDiffusionModelHijack()
