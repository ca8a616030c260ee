"""Attention backends with declared capabilities.

A backend says which masks it can honour (``none``, ``dense``, ``block``), which dtypes it is exact in and
whether it can run backward on the device at hand. Asking a backend for something it cannot do raises
``AttentionBackendError``; a mask is never dropped silently. ``"auto"`` picks plain SDPA when the mask lets
every query see every key; on CUDA it picks ``split`` (``mmflow.split_attention``) when most of the mask is
whole stream-to-stream blocks (JAM-Flow's audio → audio); otherwise SDPA with a dense boolean mask.
FlexAttention only ties dense SDPA on an H100 for JAM-Flow's masks (``performance-anchors.md``), so it is
opt-in. On CPU ``auto`` stays on the dense mask: ``split`` is exact to float rounding, not to the bit, and
released outputs are pinned bit for bit.

Shape letters: ``b`` batch, ``h`` heads, ``N`` tokens, ``d`` head width.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from .buckets import LengthBuckets, bucketed
from .masks import AttentionMask
from .split_attention import SPLIT_DTYPES, split_attention, whole_share

logger = logging.getLogger(__name__)


class AttentionBackendError(RuntimeError):
    """A backend was asked for something it cannot do (a mask it cannot honour, backward where unsupported)."""


@dataclass(frozen=True)
class AttentionBackend:
    """One way of computing attention. ``masks`` lists the mask forms it honours."""

    name: str
    masks: frozenset[str]
    description: str
    dtypes: frozenset[torch.dtype] | None = None  # None: any floating dtype

    def check(self, mask: AttentionMask | None, dtype: torch.dtype | None = None) -> None:
        """Raise if ``mask`` restricts attention and this backend cannot apply a mask, or ``dtype`` is not one
        it is exact in."""
        if mask is not None and not self.masks & {"dense", "block"} and not mask.is_full:
            raise AttentionBackendError(
                f"attention backend {self.name!r} cannot apply an attention mask ({self.description}); "
                f"use attention_backend='sdpa_masked', 'flex' or 'auto'"
            )
        if dtype is not None and self.dtypes is not None and dtype not in self.dtypes:
            raise AttentionBackendError(
                f"attention backend {self.name!r} does not support {dtype} ({self.description}); "
                f"it supports {sorted(str(d) for d in self.dtypes)}: use attention_backend='sdpa_masked' or 'auto'"
            )

    def __call__(self, q, k, v, mask: AttentionMask | None) -> torch.Tensor:
        restricted = mask is not None and not mask.is_full
        self.check(mask, q.dtype if restricted else None)
        return _KERNELS[self.name](q, k, v, None if mask is None or mask.is_full else mask)


def _sdpa(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v)


def _sdpa_masked(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.dense(q.device))


@lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _compile_flex(device: torch.device) -> bool:
    """Compile FlexAttention on CUDA always, on CPU only when asked (``MMFLOW_COMPILE_FLEX=1``): a cold CPU
    compile costs ~10 s per shape, more than tests and one-off runs gain from it."""
    return device.type == "cuda" or os.environ.get("MMFLOW_COMPILE_FLEX") == "1"


def _flex(q, k, v, mask):
    from torch.nn.attention.flex_attention import flex_attention

    if q.device.type == "cpu" and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        raise AttentionBackendError(
            "FlexAttention has no backward pass on CPU in this torch; train on CPU with attention_backend='sdpa_masked'"
        )
    block = None if mask is None else mask.block_mask(q.device)
    if _compile_flex(q.device):
        return _compiled_flex()(q, k, v, block_mask=block)
    with warnings.catch_warnings():  # eager flex warns that it is unfused; on CPU that is the known trade-off
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=block)


def _split(q, k, v, mask):
    if mask is None:
        return _sdpa(q, k, v, None)
    return split_attention(q, k, v, mask)


_KERNELS = {"sdpa": _sdpa, "sdpa_masked": _sdpa_masked, "flex": _flex, "split": _split}

BACKENDS: dict[str, AttentionBackend] = {
    "sdpa": AttentionBackend("sdpa", frozenset({"none"}), "plain scaled_dot_product_attention, no mask"),
    "sdpa_masked": AttentionBackend(
        "sdpa_masked", frozenset({"none", "dense"}), "scaled_dot_product_attention with a dense boolean mask"
    ),
    "flex": AttentionBackend(
        "flex", frozenset({"none", "block"}), "FlexAttention with a BlockMask (compiled on CUDA; forward only on CPU)"
    ),
    "split": AttentionBackend(
        "split", frozenset({"none", "dense"}),
        "unmasked SDPA on whole stream-to-stream blocks, masked SDPA on the rest, merged exactly; "
        "forward and backward on every device",
        dtypes=SPLIT_DTYPES,
    ),
}

BACKEND_CHOICES = ("auto", *BACKENDS)


def check_backend_name(name: str) -> str:
    if name not in BACKEND_CHOICES:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {BACKEND_CHOICES}")
    return name


def attend(
    q, k, v, mask: AttentionMask | None, backend: str = "auto", buckets: LengthBuckets | None = None
) -> torch.Tensor:
    """Attention of ``q`` ``(b, h, N, d)`` over ``k``, ``v`` under ``mask`` with the named backend.

    With ``buckets`` each stream's tokens are padded up to its bucket length first (``mmflow.buckets``), so
    masks and compiled kernels built for that bucket serve every length in it; the real tokens come back."""
    if buckets is not None and mask is not None:
        moved = bucketed(mask, buckets)
        return moved.unpad(attend(moved.pad(q), moved.pad(k), moved.pad(v), moved.mask, backend))
    if backend == "auto":
        backend = auto_backend(mask, q.device, q.dtype)
    try:
        chosen = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKEND_CHOICES}") from None
    return chosen(q, k, v, mask)


AUTO_SPLIT_MIN_DENSE = 0.5
"""``auto`` uses ``split`` when at least this share of the query-key pairs lies in whole unmasked blocks."""


def auto_backend(mask: AttentionMask | None, device: torch.device | str, dtype: torch.dtype) -> str:
    """The backend ``"auto"`` runs under ``mask`` for queries on ``device`` in ``dtype`` (module docstring)."""
    if mask is None or mask.is_full:
        return "sdpa"
    joint = len(mask.segments) > 1  # one stream with padding: the dense path's broadcast key mask is enough
    cuda = torch.device(device).type == "cuda"
    if cuda and dtype in SPLIT_DTYPES and joint and _whole_share(mask) >= AUTO_SPLIT_MIN_DENSE:
        return "split"
    return "sdpa_masked"


def _whole_share(mask: AttentionMask) -> float:
    """``whole_share`` once per compiled mask (it reads joint views: a device sync on a GPU)."""
    if "whole_share" not in mask._plans:
        mask._plans["whole_share"] = whole_share(mask)
    return mask._plans["whole_share"]


def naive_attention(q, k, v, dense_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reference attention written out with softmax (for tests): masked scores are −inf, empty rows give 0."""
    scores = q.float() @ k.float().transpose(-1, -2) / q.shape[-1] ** 0.5
    if dense_mask is not None:
        scores = scores.masked_fill(~dense_mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return (weights @ v.float()).to(q.dtype)
