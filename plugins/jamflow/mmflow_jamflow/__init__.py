"""JAM-Flow (arXiv 2506.23552) as an mmflow model: F5-TTS audio + LivePortrait motion, jointly attended."""

from .model import LoadedJAMFlow, build_jamflow, jamflow_config
from .outputs import JAMFlowOutput
from .pipeline import JAMFlowPipeline

__all__ = ["JAMFlowOutput", "JAMFlowPipeline", "LoadedJAMFlow", "build_jamflow", "jamflow_config"]
