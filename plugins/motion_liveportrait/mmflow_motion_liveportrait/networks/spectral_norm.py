"""Read weights saved by the legacy ``torch.nn.utils.spectral_norm`` as plain convolution weights.

LivePortrait's decoder G wraps its residual convs in the legacy spectral norm, so the official
``spade_generator.pth`` stores ``<conv>.weight_orig``, ``<conv>.weight_u`` and ``<conv>.weight_v`` instead of
``<conv>.weight``. In eval mode that wrapper uses the stored ``u`` and ``v`` without power iteration, so the
effective weight is fixed: ``W = weight_orig / σ`` with ``σ = uᵀ · (W_mat · v)``, ``W_mat`` being
``weight_orig`` flattened to ``out_channels × rest``. We fold it once at load time; the network then runs a plain
conv (no hooks, no deprecated API, same result as official inference). This module is the one place that maps
the legacy keys.
"""

from __future__ import annotations

import torch
from torch import nn

LEGACY_SUFFIXES = ("weight_orig", "weight_u", "weight_v")


def fold_spectral_norm(
    weight_orig: torch.Tensor, weight_u: torch.Tensor, weight_v: torch.Tensor
) -> torch.Tensor:
    """Return the eval-mode spectrally normalised weight (same shape as ``weight_orig``)."""
    weight_mat = weight_orig.reshape(weight_orig.shape[0], -1)  # out × (in·kh·kw)
    sigma = torch.dot(weight_u, torch.mv(weight_mat, weight_v))
    return weight_orig / sigma


def fold_legacy_spectral_norm(
    state_dict: dict[str, torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Replace every complete ``<p>.weight_orig / weight_u / weight_v`` triple under ``prefix`` by ``<p>.weight``.

    Works in place and returns ``state_dict``. Incomplete triples are left alone so a strict load reports them.
    """
    legacy_keys = [k for k in state_dict if k.startswith(prefix) and k.rsplit(".", 1)[-1] == "weight_orig"]
    for key in legacy_keys:
        base = key[: -len("weight_orig")]
        names = [base + suffix for suffix in LEGACY_SUFFIXES]
        if all(name in state_dict for name in names) and base + "weight" not in state_dict:
            weight_orig, weight_u, weight_v = (state_dict.pop(name) for name in names)
            state_dict[base + "weight"] = fold_spectral_norm(weight_orig, weight_u, weight_v)
    return state_dict


class SpectralNormConv2d(nn.Conv2d):
    """A plain ``nn.Conv2d`` that also loads the legacy spectral-norm entries of its weight (folding them)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_load_state_dict_pre_hook(self._fold_legacy_keys)

    @staticmethod
    def _fold_legacy_keys(module, state_dict, prefix, *_args) -> None:
        fold_legacy_spectral_norm(state_dict, prefix)
