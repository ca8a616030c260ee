"""LoRA adapters on mmflow pipelines, the diffusers way, through peft.

``MMFlowLoraLoaderMixin`` gives a pipeline diffusers' LoRA calls (``load_lora_weights``, ``save_lora_weights``,
``fuse_lora``/``unfuse_lora``, ``set_adapters``, ``get_active_adapters``, ``unload_lora_weights``); the adapter
layers themselves are peft's, attached to the ``MMDiT`` by its ``PeftAdapterMixin``.

Adapters are written in diffusers' LoRA format: one ``pytorch_lora_weights.safetensors`` whose keys are the
transformer's module names prefixed ``transformer.`` (``transformer.<module>.lora_A.weight`` / ``lora_B``) and
whose safetensors metadata holds the peft ``LoraConfig`` (rank, alpha, targets) under ``lora_adapter_metadata``.
That is what ``DiffusionPipeline.save_lora_weights`` writes and ``load_lora_weights`` reads, so a diffusers user's
files and tools work unchanged, and the file carries its own scale (without the config a loader must guess
``alpha = rank``). peft's own layout (``adapter_model.safetensors`` + ``adapter_config.json``, from
``PeftModel.save_pretrained``) is read as well.

Reading never runs code from the files: safetensors and JSON only (diffusers' loader falls back to unpickling
``.bin`` files; this one refuses them). A file that is not a LoRA, keys that name no layer of the model, and
factors whose shapes or rank do not fit are refused before anything is attached, naming the file and the fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY, LORA_WEIGHT_NAME_SAFE, LoraBaseMixin
from safetensors import SafetensorError, safe_open
from torch import nn

from .hub import resolve_pretrained
from .io import atomic_path

logger = logging.getLogger(__name__)

TRANSFORMER = "transformer"
PEFT_WEIGHT_NAME = "adapter_model.safetensors"
PEFT_CONFIG_NAME = "adapter_config.json"
_PEFT_PREFIX = "base_model.model."  # the keys of PeftModel.save_pretrained
_FACTOR = re.compile(r"(?P<module>.+)\.lora_(?P<factor>[AB])\.(?P<param>weight|bias)")


class LoRAFileError(ValueError):
    """An adapter that cannot be loaded onto this model; the message names the file and the fix."""


@dataclass
class LoRAWeights:
    """An adapter read from disk: ``state_dict`` keyed ``<module>.lora_A.weight`` (no prefix), ``config`` the
    peft ``LoraConfig`` fields it was saved with (None when the file has none), ``source`` for messages."""

    state_dict: dict[str, torch.Tensor]
    config: dict | None
    source: str


# ---------------------------------------------------------------------------------------------------- reading


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix != ".safetensors":
        raise LoRAFileError(f"{path} is not a .safetensors file; LoRA adapters are read only from safetensors (a "
                            f"pickled .bin/.pt could run code when loaded): convert it, or pass a folder holding "
                            f"{LORA_WEIGHT_NAME_SAFE}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            return {key: file.get_tensor(key) for key in file.keys()}, dict(file.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise LoRAFileError(f"{path} is not a readable safetensors file ({error}); pass the "
                            f"{LORA_WEIGHT_NAME_SAFE} written by save_lora_weights") from None


def _json_object(text: str, where: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise LoRAFileError(f"{where} is not valid JSON ({error}); re-save the adapter") from None
    if not isinstance(value, dict):
        raise LoRAFileError(f"{where} is not a JSON object of LoraConfig fields; re-save the adapter")
    return value


def _without_prefix(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Module-relative keys: diffusers' ``transformer.`` or peft's ``base_model.model.`` prefix removed."""
    if any(key.startswith(_PEFT_PREFIX) for key in state_dict):
        return {key.removeprefix(_PEFT_PREFIX): value for key, value in state_dict.items()}
    if any("." in key and key.split(".", 1)[0] == TRANSFORMER for key in state_dict):
        ours = {key.removeprefix(f"{TRANSFORMER}."): v for key, v in state_dict.items() if key.startswith(f"{TRANSFORMER}.")}
        others = sorted({key.split(".", 1)[0] for key in state_dict} - {TRANSFORMER})
        if others:
            logger.warning("%s: skipped the LoRA weights of components this pipeline has no adapters for: %s",
                           source, others)
        return ours
    return dict(state_dict)


def read_lora(path_or_dict: str | os.PathLike | Mapping[str, torch.Tensor], weight_name: str | None = None
              ) -> LoRAWeights:
    """The adapter in a ``pytorch_lora_weights.safetensors`` file, a folder holding one (or ``weight_name``, or
    peft's ``adapter_model.safetensors`` + ``adapter_config.json``), a Hub id in the local cache, or a state dict."""
    if isinstance(path_or_dict, Mapping):
        return LoRAWeights(_without_prefix(path_or_dict, "the given state dict"), None, "the given state dict")
    path = resolve_pretrained(path_or_dict)
    if path.is_dir() and weight_name is not None:
        path = path / weight_name
    if path.is_dir():
        for name in (LORA_WEIGHT_NAME_SAFE, PEFT_WEIGHT_NAME):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise LoRAFileError(f"{path} holds neither {LORA_WEIGHT_NAME_SAFE} (diffusers' save_lora_weights) nor "
                                f"{PEFT_WEIGHT_NAME} (peft's save_pretrained); pass the adapter's file or folder")
    elif not path.is_file():
        raise LoRAFileError(f"{path} does not exist; pass a {LORA_WEIGHT_NAME_SAFE} file or the folder holding it")
    tensors, metadata = _read_safetensors(path)
    config = None
    if LORA_ADAPTER_METADATA_KEY in metadata:
        packed = _json_object(metadata[LORA_ADAPTER_METADATA_KEY], f"{path}'s {LORA_ADAPTER_METADATA_KEY} metadata")
        config = {k.removeprefix(f"{TRANSFORMER}."): v for k, v in packed.items() if k.startswith(f"{TRANSFORMER}.")}
        config = config or (packed if "r" in packed else None)  # the model-level save_lora_adapter: no prefix
    elif path.name == PEFT_WEIGHT_NAME and (path.parent / PEFT_CONFIG_NAME).is_file():
        config = _json_object((path.parent / PEFT_CONFIG_NAME).read_text(), str(path.parent / PEFT_CONFIG_NAME))
    return LoRAWeights(_without_prefix(tensors, str(path)), config, str(path))


# ---------------------------------------------------------------------------------------------------- checking


def lora_config(weights: LoRAWeights, model: nn.Module):
    """The peft ``LoraConfig`` to attach ``weights`` to ``model`` with, after checking that every factor names a
    linear layer of ``model`` and has its shapes, and that the rank matches the saved config."""
    from peft import LoraConfig
    from peft.utils.other import get_pattern_key

    source, state_dict = weights.source, weights.state_dict
    if not state_dict:
        raise LoRAFileError(f"{source} holds no LoRA weights for the transformer; pass an adapter saved with "
                            f"save_lora_weights(..., transformer_lora_layers=...)")
    factors: dict[str, dict[str, torch.Tensor]] = {}
    strangers = []
    for key, value in state_dict.items():
        match = _FACTOR.fullmatch(key)
        if match is None:
            strangers.append(key)
        elif match["param"] == "weight":
            factors.setdefault(match["module"], {})[match["factor"]] = value
    if strangers:
        raise LoRAFileError(f"{source} is not a LoRA adapter: keys such as {strangers[:3]} are no LoRA factors "
                            f"(expected '<module>.lora_A.weight' and '<module>.lora_B.weight'); pass a file written by "
                            f"save_lora_weights or peft's save_pretrained, not a model checkpoint")
    from peft.tuners.tuners_utils import BaseTunerLayer

    # layers that already carry another adapter count as their base linear layer
    modules = {name: module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
               for name, module in model.named_modules()}
    unknown = sorted(name for name in factors if not isinstance(modules.get(name), nn.Linear))
    if unknown:
        linear = [name for name, module in modules.items() if isinstance(module, nn.Linear)][:3]
        raise LoRAFileError(f"{source} adapts {len(unknown)} layer(s) this model does not have as linear layers, such "
                            f"as {unknown[:3]} (its linear layers are named like {linear}); the adapter was trained "
                            f"for another model: load it onto the model it was trained on")
    config = _peft_config(weights.config, source) if weights.config is not None else None
    for name, pair in factors.items():
        layer, problem = modules[name], None
        down, up = pair.get("A"), pair.get("B")
        if down is None or up is None:
            problem = f"has only lora_{'A' if up is None else 'B'}"
        elif down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
            problem = f"has factors of shapes {list(down.shape)} and {list(up.shape)}, which are no rank-r pair"
        elif down.shape[1] != layer.in_features or up.shape[0] != layer.out_features:
            problem = (f"maps {down.shape[1]} -> {up.shape[0]} features, the model's layer "
                       f"{layer.in_features} -> {layer.out_features}")
        elif config is not None:
            rank = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), name), config.r)
            if down.shape[0] != rank:
                problem = f"has rank {down.shape[0]}, its saved config says rank {rank}"
        if problem:
            raise LoRAFileError(f"{source}: layer {name} {problem}; the file is damaged or was trained for another "
                                f"model: re-save the adapter from the model it was trained on")
    if config is None:  # no saved config: rank from the factors, alpha = rank (scale 1), as diffusers assumes
        ranks = {name: pair["A"].shape[0] for name, pair in factors.items()}
        rank = max(set(ranks.values()), key=list(ranks.values()).count)
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=sorted(factors),
                            rank_pattern={n: r for n, r in ranks.items() if r != rank},
                            alpha_pattern={n: r for n, r in ranks.items() if r != rank})
        logger.warning("%s has no saved LoraConfig: rank %d from its factors and alpha = rank (scale 1)", source, rank)
    return config


def _peft_config(fields: dict, source: str):
    from peft import LoraConfig

    kind = fields.get("peft_type", "LORA")
    if str(kind).upper() != "LORA":
        raise LoRAFileError(f"{source} is a peft {kind} adapter, not LoRA; only LoRA adapters load here")
    try:
        return LoraConfig(**{k: v for k, v in fields.items() if k not in ("peft_type", "auto_mapping")})
    except (TypeError, ValueError) as error:
        raise LoRAFileError(f"{source}: its saved LoraConfig is invalid ({error}); re-save the adapter with this "
                            f"peft version") from None


# ---------------------------------------------------------------------------------------------------- writing


def adapter_layers(transformer: nn.Module, adapter_name: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """One adapter of ``transformer``: its LoRA factors (peft's state dict, module-relative keys) and its
    ``LoraConfig`` as a dict; ``adapter_name`` may be omitted when there is only one."""
    from peft.utils import get_peft_model_state_dict

    names = sorted(getattr(transformer, "peft_config", None) or {})
    if not names:
        raise ValueError("the transformer has no LoRA adapter to save; load one (load_lora_weights) or train one first")
    if adapter_name is None:
        if len(names) > 1:
            raise ValueError(f"the transformer has adapters {names}; name the one to save (adapter_name=...)")
        adapter_name = names[0]
    if adapter_name not in names:
        raise ValueError(f"no adapter {adapter_name!r} on the transformer; it has {names}")
    config = transformer.peft_config[adapter_name].to_dict()
    return get_peft_model_state_dict(transformer, adapter_name=adapter_name), config


def write_lora(save_directory: str | os.PathLike, layers: Mapping[str, torch.Tensor], config: dict | None,
               weight_name: str = LORA_WEIGHT_NAME_SAFE) -> Path:
    """Write ``layers`` (module-relative keys) as diffusers' ``pytorch_lora_weights.safetensors`` in
    ``save_directory``, with ``config`` as its ``lora_adapter_metadata``; atomically."""
    from safetensors.torch import save_file

    if not weight_name.endswith(".safetensors"):
        raise ValueError(f"weight_name {weight_name!r} must end in .safetensors: adapters are saved only as safetensors")
    folder = Path(save_directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; save_lora_weights needs a folder to write {weight_name} into")
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt"}
    if config:
        packed = {f"{TRANSFORMER}.{key}": sorted(value) if isinstance(value, set) else value
                  for key, value in config.items()}
        metadata[LORA_ADAPTER_METADATA_KEY] = json.dumps(packed, indent=2, sort_keys=True)
    tensors = {f"{TRANSFORMER}.{key}": value.detach().contiguous().cpu() for key, value in layers.items()}
    path = folder / weight_name
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    logger.info("saved the LoRA adapter to %s", path)
    return path


def save_transformer_adapter(transformer: nn.Module, save_directory: str | os.PathLike,
                             adapter_name: str | None = None) -> Path:
    """Save one of ``transformer``'s adapters unmerged, in the format ``load_lora_weights`` reads."""
    layers, config = adapter_layers(transformer, adapter_name)
    return write_lora(save_directory, layers, config)


# ---------------------------------------------------------------------------------------------------- pipeline


class MMFlowLoraLoaderMixin(LoraBaseMixin):
    """diffusers' LoRA calls for a pipeline whose ``transformer`` is an ``MMDiT`` (the only LoRA-loadable part).

    ``pipe.load_lora_weights(path, adapter_name="style")``, ``pipe.set_adapters(["style", "voice"], [0.7, 0.3])``,
    ``pipe.fuse_lora()`` / ``pipe.unfuse_lora()``, ``pipe.unload_lora_weights()``; the rest of
    ``LoraBaseMixin`` (``disable_lora``, ``enable_lora``, ``delete_adapters``, ``get_list_adapters``) works too.
    """

    _lora_loadable_modules = [TRANSFORMER]
    transformer_name = TRANSFORMER

    @classmethod
    def lora_state_dict(cls, pretrained_model_name_or_path_or_dict, weight_name: str | None = None,
                        return_lora_metadata: bool = False, **kwargs):
        """The transformer's LoRA factors in ``pretrained_model_name_or_path_or_dict`` (see ``read_lora``), keys
        without prefix; with ``return_lora_metadata`` also the saved ``LoraConfig`` fields (or None)."""
        _refuse_unsupported(kwargs, "lora_state_dict")
        weights = read_lora(pretrained_model_name_or_path_or_dict, weight_name)
        return (weights.state_dict, weights.config) if return_lora_metadata else weights.state_dict

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name: str | None = None,
                          weight_name: str | None = None, **kwargs):
        """Attach the adapter in ``pretrained_model_name_or_path_or_dict`` (a ``pytorch_lora_weights.safetensors``
        file, a folder holding it or peft's ``adapter_model.safetensors``, a cached Hub id, or a state dict) to
        the transformer as ``adapter_name`` (default ``default_<n>``) and make it the active adapter."""
        _refuse_unsupported(kwargs, "load_lora_weights")
        transformer = getattr(self, self.transformer_name)
        if adapter_name is not None and adapter_name in (getattr(transformer, "peft_config", None) or {}):
            raise ValueError(f"an adapter named {adapter_name!r} is already loaded; choose another adapter_name or "
                             f"delete_adapters({adapter_name!r}) first")
        weights = read_lora(pretrained_model_name_or_path_or_dict, weight_name)
        config = lora_config(weights, transformer)
        transformer.load_lora_adapter(dict(weights.state_dict), prefix=None, adapter_name=adapter_name,
                                      metadata=config.to_dict(), _pipeline=self)
        logger.info("loaded the LoRA adapter %s onto the transformer", weights.source)

    @classmethod
    def save_lora_weights(cls, save_directory: str | os.PathLike, transformer_lora_layers=None,
                          is_main_process: bool = True, weight_name: str | None = None, safe_serialization: bool = True,
                          transformer_lora_adapter_metadata: dict | None = None, **kwargs) -> Path | None:
        """Write ``transformer_lora_layers`` (peft's ``get_peft_model_state_dict(transformer)``, or a module whose
        state dict that is) to ``save_directory/pytorch_lora_weights.safetensors`` with the adapter's
        ``LoraConfig`` (``transformer.peft_config[name].to_dict()``) as metadata, as diffusers' pipelines do."""
        _refuse_unsupported(kwargs, "save_lora_weights")
        if not safe_serialization:
            raise ValueError("safe_serialization=False (a pickle) is not offered: adapters are saved as safetensors")
        if not is_main_process:
            return None
        if not transformer_lora_layers:
            raise ValueError("pass transformer_lora_layers (peft.utils.get_peft_model_state_dict(pipe.transformer)); "
                             "MMFlowLoraLoaderMixin saves only transformer adapters")
        layers = (transformer_lora_layers.state_dict() if isinstance(transformer_lora_layers, nn.Module)
                  else transformer_lora_layers)
        return write_lora(save_directory, layers, transformer_lora_adapter_metadata,
                          weight_name or LORA_WEIGHT_NAME_SAFE)

    def save_lora_adapter(self, save_directory: str | os.PathLike, adapter_name: str | None = None) -> Path:
        """Save one of the transformer's adapters (``adapter_name`` may be omitted when there is one)."""
        return save_transformer_adapter(getattr(self, self.transformer_name), save_directory, adapter_name)

    def fuse_lora(self, components: list[str] | None = None, lora_scale: float = 1.0, safe_fusing: bool = False,
                  adapter_names: list[str] | None = None, **kwargs):
        """Add the active adapters (times ``lora_scale``) into the transformer's weights; ``unfuse_lora`` undoes
        it, scale included."""
        super().fuse_lora(components=components or [TRANSFORMER], lora_scale=lora_scale, safe_fusing=safe_fusing,
                          adapter_names=adapter_names, **kwargs)
        self._fused_lora_scale = lora_scale

    def unfuse_lora(self, components: list[str] | None = None, **kwargs):
        super().unfuse_lora(components=components or [TRANSFORMER], **kwargs)
        scale = self.__dict__.pop("_fused_lora_scale", 1.0)
        if scale != 1.0:  # diffusers' fuse_lora scaled the layers and leaves them scaled: undo that too
            from peft.tuners.tuners_utils import BaseTunerLayer

            for module in getattr(self, self.transformer_name).modules():
                if isinstance(module, BaseTunerLayer):
                    module.unscale_layer(scale)

    def unload_lora_weights(self):
        """Remove every adapter layer; fused adapters stay baked into the weights (diffusers' behaviour), so
        ``fuse_lora()`` then ``unload_lora_weights()`` leaves a plain model with the adapter merged."""
        super().unload_lora_weights()
        self._merged_adapters = set()
        self.__dict__.pop("_fused_lora_scale", None)

    def get_active_adapters(self) -> list[str]:
        """The names of the active adapters (empty when none is loaded)."""
        if not getattr(getattr(self, self.transformer_name), "peft_config", None):
            return []
        return list(super().get_active_adapters())


def _refuse_unsupported(kwargs: Mapping, call: str):
    """diffusers' download, hotswap and pickle options have no effect here: refuse them rather than ignore them."""
    if kwargs:
        raise TypeError(f"{call}() does not support {sorted(kwargs)} in mmflow (adapters are read from local "
                        f"safetensors files, a cached Hub id or a state dict); drop them")
