"""diffusers and transformers, imported on first use under one lock.

Start-up leaves them unimported (the page needs neither), so their first import happens on two threads at
once: the background model load, and a request thread counting prompt tokens for the limits. Concurrent
first imports of transformers' lazy module can hand one thread a half-initialised package ("module
'transformers' has no attribute 'CLIPTokenizer'"), so every first import goes through this lock.
"""

from __future__ import annotations

import threading

_import_lock = threading.Lock()


def import_transformers() -> None:
    """transformers with the CLIP classes resolved (cheap once done)."""
    with _import_lock:
        from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401


def import_model_libraries() -> None:
    """diffusers (with its single-file loaders) and transformers (cheap once done)."""
    with _import_lock:
        from diffusers.loaders import single_file_utils  # noqa: F401
        from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401
