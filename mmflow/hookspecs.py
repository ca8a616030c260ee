"""The hooks a plugin may implement (pluggy specs), and the markers plugins decorate them with.

Kept apart from discovery (``plugins.py``) so that a plugin module, or the core's own ``builtins``, can import
``hookimpl`` without importing the registry that imports them.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from .streams import StreamSpec
from .tasks import TaskPreset

PROJECT = "mmflow"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class MMFlowHookSpecs:
    """Each hook returns a mapping or list; the registry merges the answers of all plugins."""

    @hookspec
    def mmflow_streams(self) -> list[StreamSpec]:
        """Specs of the streams this plugin provides (name, frame rate, channels, position policy).

        A model config that names a registered stream (``{"stream": "motion", ...}``) takes these values; a config
        that contradicts them is refused.
        """

    @hookspec
    def mmflow_stream_codecs(self) -> dict[str, Callable]:
        """Per stream name, a factory ``factory(pipeline) -> StreamCodec`` (``mmflow.codecs``): how user inputs
        become the stream's latent and conditions, and how its generated latent becomes outputs.

        Streams without a registered codec use ``TensorCodec`` (arrays in, arrays out).
        """

    @hookspec
    def mmflow_pipelines(self) -> dict[str, type]:
        """Pipeline classes by class name (subclasses of ``mmflow.pipeline.MMFlowPipeline``): a saved model folder
        whose ``model_index.json`` names one of them loads with it, through ``mmflow generate`` and
        ``load_pipeline``. Only registered classes are ever loaded from a folder."""

    @hookspec
    def mmflow_models(self) -> dict[str, str]:
        """Saved model folders this plugin ships, by name (``mmflow generate --model NAME``); a plugin marks the
        one to use when ``--model`` is omitted by also naming it ``"default"``."""

    @hookspec
    def mmflow_backbones(self) -> dict[str, type]:
        """Stream backbone classes by name (see ``mmflow.backbone.BackboneProtocol``).

        A model config names its backbone (``"backbone": "f5tts_dit"``) and the registry builds it.
        """

    @hookspec
    def mmflow_mask_presets(self) -> dict[str, Callable]:
        """Mask policy factories by name: ``factory(**kwargs) -> MaskPolicy``."""

    @hookspec
    def mmflow_tasks(self) -> list[TaskPreset]:
        """Named tasks (which streams are generated, given or absent) this plugin's streams support."""

    @hookspec
    def mmflow_demos(self) -> dict[str, Callable]:
        """Demos for ``mmflow demo NAME``: ``demo(argv: list[str]) -> int`` (an exit status)."""

    @hookspec
    def mmflow_commands(self) -> dict[str, Callable]:
        """Subcommands of ``mmflow``: ``add(subparsers) -> None`` adds its parser (``set_defaults(run=...)``,
        ``run(args) -> int``). E.g. the JAM-Flow plugin adds ``mmflow build-jamflow``; the core adds ``train``."""

    @hookspec
    def mmflow_metrics(self) -> dict[str, Callable]:
        """Evaluation metrics by name: ``factory(options, workdir) -> mmflow.evaluation.Metric`` (see
        ``mmflow/evaluation/metric.py``). A metric reads generated files by kind, so it scores any model whose
        pipeline writes that kind of file."""

    @hookspec
    def mmflow_benchmarks(self) -> dict[str, Callable]:
        """Benchmark lists by name: ``loader(root: Path | None) -> list[mmflow.evaluation.BenchmarkItem]``, or
        ``loader(root, limit=None, options={})`` when it declares those keywords (``limit``: stop after that many
        items; ``options``: ``--benchmark-option`` strings). ``root`` is the local dataset folder (None for
        benchmarks shipped in the plugin); a loader raises ``mmflow.codecs.InputError`` naming what is missing
        from it, or an unknown option."""
