"""The F5-TTS backbone passes mmflow's backbone conformance checks (``mmflow.testing.BackboneConformance``)."""

from __future__ import annotations

import torch
from mmflow_audio_f5tts.backbone import TEXT_KEY

from mmflow.testing import BackboneConformance, random_batches


class TestF5TTSBackbone(BackboneConformance):
    backbone = "f5tts_dit"
    backbone_config = {"dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "ff_mult": 2, "text_dim": 16,
                       "text_num_embeds": 20, "conv_layers": 1, "text_mask_padding": True}
    stream = {"frame_rate": "375/4", "channels": 4, "cond_channels": 0}

    def batches(self, model):
        batches = random_batches(model)
        audio = batches["subject"]
        text = torch.randint(0, 20, (audio.batch_size, 12), generator=torch.Generator().manual_seed(0))
        batches["subject"] = audio.replace(extras={TEXT_KEY: text})
        return batches
