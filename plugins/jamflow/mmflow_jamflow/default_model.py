"""The embedded default JAM-Flow model: a small pipeline folder shipped inside this package (no downloads)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"


def default_model_path() -> Path:
    """The bundled pipeline folder; raises naming the fix when this installation lacks it."""
    if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the embedded default model is missing ({DEFAULT_MODEL_DIR}); reinstall mmflow-jamflow from the "
            f"repository (plugins/jamflow) or pass --model with a saved JAMFlowPipeline folder"
        )
    return DEFAULT_MODEL_DIR
