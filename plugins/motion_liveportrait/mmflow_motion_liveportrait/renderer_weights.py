"""LivePortrait's rendering networks as one diffusers component, so a pipeline saves and reloads them.

``LivePortraitWeights`` reads the official ``.pth`` tree; a pipeline wants a ``save_pretrained`` folder instead.
``LivePortraitComponents`` holds F, M, W, G (and the stitching MLP S) as submodules with each network's config,
so ``JAMFlowPipeline.save_pretrained`` writes them as one safetensors file and ``from_pretrained`` rebuilds them.
The portrait itself is a call-time input: ``renderer(portrait)`` prepares a ``LivePortraitRenderer`` for it.
"""

from __future__ import annotations

import os

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .checkpoints import LivePortraitWeights
from .networks import (
    AppearanceFeatureExtractor,
    MotionExtractor,
    SPADEDecoder,
    StitchingRetargetingNetwork,
    WarpingNetwork,
)
from .render import LivePortraitNetworks, LivePortraitRenderer

_NETWORKS = {
    "appearance_feature_extractor": AppearanceFeatureExtractor,
    "motion_extractor": MotionExtractor,
    "warping_module": WarpingNetwork,
    "spade_generator": SPADEDecoder,
    "stitching": StitchingRetargetingNetwork,
}


def _public_config(model: ModelMixin) -> dict:
    return {k: v for k, v in dict(model.config).items() if not k.startswith("_")}


class LivePortraitComponents(ModelMixin, ConfigMixin):
    """F, M, W, G and S with their configs (None: the official full-size network; ``stitching=None`` in
    ``from_networks``/``from_liveportrait``: no stitching)."""

    @register_to_config
    def __init__(
        self,
        appearance_feature_extractor_config: dict | None = None,
        motion_extractor_config: dict | None = None,
        warping_module_config: dict | None = None,
        spade_generator_config: dict | None = None,
        stitching_config: dict | None = None,
        use_stitching: bool = True,
    ):
        super().__init__()
        # (config names differ from the submodule names: diffusers resolves config keys as attributes first)
        configs = {
            "appearance_feature_extractor": appearance_feature_extractor_config,
            "motion_extractor": motion_extractor_config,
            "warping_module": warping_module_config,
            "spade_generator": spade_generator_config,
        }
        for name, config in configs.items():
            setattr(self, name, _NETWORKS[name](**(config or {})))
        if use_stitching:
            self.stitching = (StitchingRetargetingNetwork(**stitching_config) if stitching_config
                              else StitchingRetargetingNetwork.from_official_config("stitching"))
        else:
            self.stitching = None

    @classmethod
    def from_networks(cls, networks: LivePortraitNetworks) -> LivePortraitComponents:
        """Wrap loaded networks (their weights are copied)."""
        parts = {name: getattr(networks, name) for name in _NETWORKS if name != "stitching"}
        with torch.device("meta"):
            components = cls(
                **{f"{name}_config": _public_config(net) for name, net in parts.items()},
                stitching_config=None if networks.stitching is None else _public_config(networks.stitching),
                use_stitching=networks.stitching is not None,
            )
        state = {f"{name}.{k}": v for name, net in parts.items() for k, v in net.state_dict().items()}
        if networks.stitching is not None:
            state.update({f"stitching.{k}": v for k, v in networks.stitching.state_dict().items()})
        components.load_state_dict(state, strict=True, assign=True)
        return components.eval()

    @classmethod
    def from_liveportrait(cls, weights: LivePortraitWeights | str | os.PathLike, stitching: bool = True):
        """From the official ``pretrained_weights/liveportrait/`` folder (loaded strictly)."""
        return cls.from_networks(LivePortraitNetworks.from_weights(weights, stitching=stitching))

    def networks(self) -> LivePortraitNetworks:
        return LivePortraitNetworks(
            appearance_feature_extractor=self.appearance_feature_extractor,
            motion_extractor=self.motion_extractor,
            warping_module=self.warping_module,
            spade_generator=self.spade_generator,
            stitching=self.stitching,
        )

    def renderer(self, portrait, **kwargs) -> LivePortraitRenderer:
        """A renderer for one portrait (face detected and F, M run on it now), on this module's device."""
        kwargs.setdefault("device", self.device)
        return LivePortraitRenderer(self.networks(), portrait, **kwargs)
