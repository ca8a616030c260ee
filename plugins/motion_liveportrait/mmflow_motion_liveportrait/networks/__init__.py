"""Re-implementations of LivePortrait's networks as diffusers models, weight-compatible with the official files."""

from .appearance_feature_extractor import AppearanceFeatureExtractor
from .motion_extractor import MotionExtractor, MotionExtractorOutput
from .spade_generator import SPADEDecoder
from .stitching_retargeting import OFFICIAL_MLP_CONFIGS, StitchingRetargetingNetwork
from .warping_module import WarpingNetwork, WarpingOutput

__all__ = [
    "OFFICIAL_MLP_CONFIGS",
    "AppearanceFeatureExtractor",
    "MotionExtractor",
    "MotionExtractorOutput",
    "SPADEDecoder",
    "StitchingRetargetingNetwork",
    "WarpingNetwork",
    "WarpingOutput",
]
