"""The embedded default model: a tiny SD1-family model trained by the project on procedural shapes.

Only paths here; importing this package loads nothing.
"""

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[3] / "models" / "default"
CHECKPOINT_PATH = MODEL_DIR / "shapes64.safetensors"
