"""Textual-inversion embeddings: GET /sdapi/v1/embeddings (for the current model), POST refresh-embeddings."""

from __future__ import annotations

from fastapi import APIRouter

from sdwebui.api import models as m
from sdwebui.api.routes.common import API, RouteContext
from sdwebui.models.lora.embeddings import Embedding


def router(ctx: RouteContext) -> APIRouter:
    router = APIRouter()
    services = ctx.services

    @router.get(f"{API}/embeddings", response_model=m.EmbeddingsResponse)
    def embeddings():
        """A1111's lists: `loaded` fit the current model's text encoders, `skipped` do not (another width).
        Before any model is loaded, every readable embedding is listed as loaded."""
        model = getattr(services.models, "current", None)
        if model is None:
            return m.EmbeddingsResponse(loaded=_items(services.embeddings.all()), skipped={})
        split = services.embeddings.for_model(model)
        return m.EmbeddingsResponse(loaded=_items(split.loaded), skipped=_items(split.skipped))

    @router.post(f"{API}/refresh-embeddings")
    def refresh_embeddings():
        services.embeddings.refresh()
        return None

    return router


def _items(embeddings: dict[str, Embedding]) -> dict[str, m.EmbeddingItem]:
    return {
        name: m.EmbeddingItem(
            step=e.step,
            sd_checkpoint=e.sd_checkpoint,
            sd_checkpoint_name=e.sd_checkpoint_name,
            shape=e.shape,
            vectors=e.vectors,
        )
        for name, e in embeddings.items()
    }
