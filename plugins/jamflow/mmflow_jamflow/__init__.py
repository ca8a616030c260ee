"""JAM-Flow (arXiv 2506.23552) as an mmflow model: F5-TTS audio + LivePortrait motion, jointly attended.

Names are imported on first use, so light modules (the synthetic corpus, the command line) do not pay for
diffusers and transformers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "JAMFlowOutput": ".outputs",
    "JAMFlowPipeline": ".pipeline",
    "LoadedJAMFlow": ".model",
    "build_jamflow": ".model",
    "jamflow_config": ".model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mmflow_jamflow' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
