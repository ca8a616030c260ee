"""``mmflow app``: a Gradio web app for any saved model, one tab per task, built from the tasks' declared inputs.

    mmflow app [--model FOLDER|NAME] [--port 7860] [--host 127.0.0.1] [--share] [--steps N]

Every task of the loaded model (``pipe.tasks``) gets a tab whose input widgets come from the task's declared
inputs (``pipe.task_inputs``), so a third-party model gets its tabs with no app code of its own: each input is a
file upload read by the stream's codec (e.g. a ``.npy`` array). A pipeline class may offer friendlier widgets and
outputs through a classmethod ``app_widgets()`` returning an ``AppWidgets`` (JAM-Flow's: text boxes, audio
recording, the bundled portrait, the video with sound and a mouth-opening plot); the core knows no model.

The app is local by default: it binds to 127.0.0.1, ``--share`` is off, Gradio's analytics are disabled and the
theme uses system fonts (no font download), so it runs with no network.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codecs import InputError
from .tasks import TaskInput, TaskPreset

logger = logging.getLogger(__name__)

HELP = "serve a web app (Gradio) with one tab per task of a saved model (default: the shipped default model)"
USER_ERRORS = (InputError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
"""Errors a user's input causes: shown in the page as a message; anything else is a bug and keeps its traceback."""


def _offline_gradio():
    """Gradio, imported with its analytics (a request to a remote server per launch) switched off."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    return gr


@dataclass
class RunSettings:
    """The advanced settings of one run (the pipeline's call arguments besides the task's inputs)."""

    num_inference_steps: int | None = None
    guidance_scale: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    joint_attention: bool = True
    duration: float | None = None
    spans: dict[str, list[tuple[float, float]]] | None = None
    sway_coefficient: float | None = None

    def call_arguments(self) -> dict[str, Any]:
        return {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "seed": self.seed, "joint_attention": self.joint_attention, "duration": self.duration,
                "spans": self.spans, "sway_coefficient": self.sway_coefficient}


class AppWidgets:
    """How the app shows one pipeline class: the generic widgets, which a model's plugin may subclass.

    Generic: every input is a file upload its codec reads, the outputs are the files ``pipe.save`` writes.
    """

    default_guidance = 0.0

    def input_component(self, gr, item: TaskInput):
        """The widget of one declared input (its value is passed to the pipeline as that keyword); None: not shown
        (an input only Python callers can give, e.g. a ready renderer object)."""
        return gr.File(label=_label(item), type="filepath")

    def convert(self, name: str, value):
        """A widget's value as the pipeline's keyword value; None leaves the input out."""
        return None if value is None or (isinstance(value, str) and not value.strip()) else value

    def output_components(self, gr) -> list:
        return [gr.File(label="files", file_count="multiple")]

    def generate(self, pipe, task: TaskPreset, inputs: Mapping[str, Any], settings: RunSettings):
        return pipe(task.name, progress=True, **settings.call_arguments(), **inputs)

    def save(self, pipe, result, folder: Path) -> list[Path]:
        return pipe.save(result, folder, "sample")

    def present(self, task: TaskPreset, result, paths: Sequence[Path]) -> list:
        """The output components' values, in ``output_components`` order."""
        return [[str(path) for path in paths]]


def _label(item: TaskInput) -> str:
    return f"{item.name}{'' if item.required else ' (optional)'}: {item.description}"


def widgets_for(pipeline_cls) -> AppWidgets:
    """The pipeline class's own widgets (``app_widgets()``), else the generic ones."""
    factory = getattr(pipeline_cls, "app_widgets", None)
    return factory() if factory is not None else AppWidgets()


def parse_spans(text: str | None) -> dict[str, list[tuple[float, float]]] | None:
    """``"audio:1.0:1.6, motion:0.5:1"`` (the CLI's ``--span`` values, comma-separated) as a call's ``spans=``."""
    from .generate_command import collect_spans, span_argument

    parts = [part.strip() for part in (text or "").replace(";", ",").split(",") if part.strip()]
    if not parts:
        return None
    try:
        return collect_spans([span_argument(part) for part in parts])
    except argparse.ArgumentTypeError as error:
        raise InputError(f"spans: {error}") from None


def _present_streams(pipe, task: TaskPreset) -> list[str]:
    return [name for name in pipe.stream_names if task.role(name) != "absent"]


def _task_tab(gr, pipe, task: TaskPreset, widgets: AppWidgets, default_steps, out_root):
    """One tab: the task's inputs, its advanced settings, a generate button and the outputs."""
    gr.Markdown(task.description)
    with gr.Row():
        with gr.Column():
            shown = [(item.name, widgets.input_component(gr, item)) for item in pipe.task_inputs(task)]
            names = [name for name, component in shown if component is not None]
            inputs = [component for _, component in shown if component is not None]
            button = gr.Button("generate", variant="primary", elem_id=f"generate-{task.name}")
            with gr.Accordion("advanced settings", open=False):
                config = pipe.scheduler.config
                steps = gr.Number(value=default_steps or config.num_inference_steps, precision=0,
                                  label="solver steps")
                sway = gr.Number(value=config.sway_coefficient, label="sway sampling coefficient (F5-TTS's "
                                 "sway_sampling_coef; 0: uniform steps)")
                present = _present_streams(pipe, task)
                cfgs = [gr.Number(value=widgets.default_guidance, label=f"guidance scale (CFG) of {name}")
                        for name in present]
                seed = gr.Number(value=0, precision=0, label="seed")
                joint = gr.Checkbox(value=True, label="joint attention (off: each stream alone, the ablation)")
                duration = gr.Number(value=None, label="duration in seconds (empty: from the inputs)")
                spans = gr.Textbox(label="spans to regenerate: STREAM:START:END, comma-separated (e.g. "
                                   f"{task.generate[0]}:0.5:1.0)", visible=task.editable)
        with gr.Column():
            outputs = widgets.output_components(gr)

    def run(*values, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (Gradio finds its progress bar so)
        given = dict(zip(names, values[:len(names)], strict=True))
        step_value, sway_value, *cfg_values = values[len(names):len(names) + 2 + len(present)]
        seed_value, joint_value, duration_value, spans_value = values[len(names) + 2 + len(present):]
        try:
            settings = RunSettings(
                num_inference_steps=None if step_value is None else int(step_value),
                sway_coefficient=None if sway_value is None else float(sway_value),
                guidance_scale={name: float(v or 0.0) for name, v in zip(present, cfg_values, strict=True)},
                seed=int(seed_value or 0), joint_attention=bool(joint_value),
                duration=None if not duration_value else float(duration_value),
                spans=parse_spans(spans_value) if task.editable else None)
            converted = {name: widgets.convert(name, value) for name, value in given.items()}
            call_inputs = {name: value for name, value in converted.items() if value is not None}
            progress(0, desc=f"{task.name}: sampling and decoding")
            result = widgets.generate(pipe, task, call_inputs, settings)
            progress(0.95, desc="writing files")
            folder = Path(tempfile.mkdtemp(prefix=f"{task.name}-", dir=out_root))
            paths = widgets.save(pipe, result, folder)
        except USER_ERRORS as error:  # the pipeline's message, not a traceback
            logger.info("%s: refused: %s", task.name, error)
            raise gr.Error(str(error), print_exception=False) from None
        values = widgets.present(task, result, paths)
        return values[0] if len(outputs) == 1 else values

    button.click(run, inputs=[*inputs, steps, sway, *cfgs, seed, joint, duration, spans],
                 outputs=outputs, api_name=task.name, concurrency_limit=1)


def build_app(pipe, widgets: AppWidgets | None = None, default_steps: int | None = None, title: str = "mmflow"):
    """A ``gr.Blocks`` with one tab per task of ``pipe`` (a loaded ``MMFlowPipeline`` or subclass)."""
    gr = _offline_gradio()
    widgets = widgets or widgets_for(type(pipe))
    out_root = Path(tempfile.mkdtemp(prefix="mmflow-app-"))  # Gradio serves files from the temp folder
    tasks = pipe.tasks
    if not tasks:
        raise ValueError(f"the model has no registered task (streams {pipe.stream_names}); install the plugin that "
                         f"registers its tasks (`mmflow tasks` lists them)")
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nOne tab per task of the loaded model (streams: {', '.join(pipe.stream_names)}).")
        with gr.Tabs():
            for name in sorted(tasks, key=lambda n: (n != _first_task(tasks), n)):
                with gr.Tab(name, id=name):
                    _task_tab(gr, pipe, tasks[name], widgets, default_steps, out_root)
    return demo


def _first_task(tasks: Mapping[str, TaskPreset]) -> str:
    """The tab shown first: the task generating the most streams (the model's main task), then by name."""
    return min(tasks, key=lambda n: (-len(tasks[n].generate), tasks[n].editable, n))


def offline_theme(gr):
    """Gradio's default look with system fonts: the stock theme downloads its fonts from the web."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def main(args) -> int:
    from .generate_command import pipeline_class, resolve_model

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not 0 <= args.port < 65536:
        raise ValueError(f"--port {args.port} is not a TCP port (0-65535)")
    folder = resolve_model(args.model)
    cls = pipeline_class(folder)
    pipe = cls.from_pretrained(folder).to(args.device)
    demo = build_app(pipe, widgets_for(cls), default_steps=args.steps, title=f"mmflow: {folder.name}")
    gr = _offline_gradio()
    logger.info("serving %s on http://%s:%d (share=%s)", folder, args.host, args.port, args.share)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share, theme=offline_theme(gr),
                        footer_links=[], quiet=True)
    return 0


def add_app(subparsers) -> None:
    parser = subparsers.add_parser("app", help=HELP, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="saved pipeline folder, or the name of an installed model (default: default)")
    parser.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 serves the network)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    parser.add_argument("--steps", type=int, help="default solver steps shown in the page (default: the model's)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    parser.set_defaults(run=main)
