"""Hub-style model ids (``org/name``) resolved from the local Hugging Face cache, never over the network.

A diffusers user writes ``MMFlowPipeline.from_pretrained("org/name")`` for a model they downloaded once
(``hf download org/name``); here that id is looked up the way ``huggingface_hub`` does offline
(``snapshot_download(..., local_files_only=True)``: ``models--org--name/refs/<revision>`` names a snapshot
folder) and the snapshot folder is loaded like any saved folder, with the same checks. Nothing is downloaded:
a model that is not cached is an error that says how to get it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def is_hub_id(name: str | os.PathLike) -> bool:
    """Whether ``name`` reads as ``org/name`` and is no existing path (a folder of that name wins)."""
    return isinstance(name, str) and HUB_ID.fullmatch(name) is not None and not Path(name).exists()


def resolve_pretrained(name_or_path: str | os.PathLike, revision: str | None = None,
                       cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder to load for ``name_or_path``: a path as given, or the cached snapshot of a Hub id."""
    if not is_hub_id(name_or_path):
        return Path(name_or_path)
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(name_or_path), revision=revision, cache_dir=cache_dir,
                                      local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError):  # not cached, or a name the Hub would not accept
        where = cache_dir or constants.HF_HUB_CACHE
        at = f" at revision {revision!r}" if revision else ""
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a folder nor a model in the local Hugging Face cache{at} ({where}); mmflow "
            f"never downloads: fetch it once with `hf download {name_or_path}` (or set HF_HOME / HF_HUB_CACHE to the "
            f"cache that holds it), or pass a saved pipeline folder"
        ) from None
