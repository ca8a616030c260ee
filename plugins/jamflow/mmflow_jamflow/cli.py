"""``mmflow generate`` and ``mmflow build-jamflow``: the JAM-Flow pipeline from the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mmflow.generate_command import collect_spans, span_argument

logger = logging.getLogger(__name__)

GENERATE_EXAMPLES = """\
examples:
  # text -> talking video with speech (embedded default model, bundled portrait)
  mmflow generate --task talking_head --text "Good morning, how are you today?" --out outputs/talk
  # the same with an F5-TTS based model, a reference voice and your portrait
  mmflow generate --model my_jamflow --text "Hello." --ref-audio me.wav --ref-text "My voice." \\
      --portrait me.jpg --out outputs/hello
  # given speech -> facial motion (and a video on the portrait)
  mmflow generate --task audio_to_motion --audio speech.wav --out outputs/a2m
  # dubbing: new speech timed to a motion template (or a video with --liveportrait-weights)
  mmflow generate --task dubbing --motion clip.pkl --text "New words." --out outputs/dub
  # regenerate 1.0-1.6 s of speech and mouth, keep the rest exactly
  mmflow generate --task edit --audio a.wav --motion a.npz --text "Full new transcript." \\
      --span audio:1.0:1.6 --span motion:1.0:1.6 --out outputs/edit
"""


def _spans(args) -> dict[str, list]:
    return collect_spans(args.span)


def _guidance(args) -> dict[str, float]:
    return {"audio": args.cfg if args.cfg_audio is None else args.cfg_audio,
            "motion": args.cfg if args.cfg_motion is None else args.cfg_motion}


def _generate(args) -> int:
    from mmflow.io import OutputLockedError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_generate(args)
    except (OSError, OutputLockedError) as error:  # output folder problems: one line, as mmflow does for the rest
        print(f"mmflow: error: {error}", file=sys.stderr)
        return 2


def run_generate(args) -> int:
    """``mmflow generate`` with parsed ``args``; bad input raises. What needs no model (output names, numbers) is
    checked first, then the run holds a lock on the output folder against a second run; a failed run removes
    only the empty folders it created."""
    from mmflow.io import check_replaceable_file, folder_lock, output_folder

    from .outputs import OUTPUT_KINDS, output_paths
    from .validation import check_call_arguments

    kinds = [kind.strip() for kind in args.outputs.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(OUTPUT_KINDS))
    if unknown:
        raise ValueError(f"--outputs has unknown kind(s) {unknown}; choose from {','.join(OUTPUT_KINDS)}")
    for path in output_paths(args.out, args.stem, kinds)[0].values():
        check_replaceable_file(path)
    check_call_arguments(speed=args.speed, duration=args.duration, num_inference_steps=args.steps,
                         guidance_scale=_guidance(args), seed=args.seed, spans=_spans(args))
    with output_folder(args.out) as folder, folder_lock(folder):
        return _generate_into(Path(args.out), kinds, args)


def _generate_into(out: Path, kinds: list[str], args) -> int:
    import torch

    from .default_model import default_model_path
    from .pipeline import JAMFlowPipeline

    model = Path(args.model) if args.model else default_model_path()
    pipe = JAMFlowPipeline.from_pretrained(model)
    pipe.to(args.device)
    spans, guidance = _spans(args), _guidance(args)
    portrait = args.portrait
    takes_portrait = "portrait" in {item.name for item in pipe.task_inputs(args.task)}  # tts: no motion stream
    if portrait is None and not args.no_video and takes_portrait:
        from mmflow_motion_liveportrait.face import demo_portrait_path

        portrait = demo_portrait_path()
    result = pipe(
        args.task,
        args.text,
        ref_audio=args.ref_audio,
        ref_text=args.ref_text,
        audio=args.audio,
        motion=args.motion,
        portrait=None if args.no_video else portrait,
        liveportrait_weights=args.liveportrait_weights,
        idle=args.idle,
        size=args.size,
        spans=spans or None,
        duration=args.duration,
        speed=args.speed,
        num_inference_steps=args.steps,
        guidance_scale=guidance,
        uncond_joint_view={stream: False for stream in args.uncond_joint_off or []},
        seed=args.seed,
    )
    with torch.no_grad():
        written = result.save(out, stem=args.stem, kinds=kinds)
    for path in written:
        print(path)
    return 0


def add_generate(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="run a JAM-Flow task (talking head, audio->motion, dubbing, video->video, TTS, edit)",
        description="Generate speech and facial motion with a JAM-Flow pipeline folder. Outputs go to --out as "
        "<stem>.wav, <stem>.npz / .pkl (LivePortrait motion) and <stem>.mp4 (video on the portrait).",
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", default="talking_head",
                        choices=["talking_head", "tts", "audio_to_motion", "dubbing", "video_to_video", "edit"])
    parser.add_argument("--model", help="saved JAMFlowPipeline folder (default: the embedded default model)")
    parser.add_argument("--text", help="text to say (edit: the transcript of the result)")
    parser.add_argument("--ref-audio", help="reference voice clip (3-12 s)")
    parser.add_argument("--ref-text", help="transcript of --ref-audio")
    parser.add_argument("--audio", help="given speech (audio_to_motion, edit)")
    parser.add_argument("--motion", help="given motion: .pkl/.npz template, or a video with --liveportrait-weights")
    parser.add_argument("--portrait", help="image to animate (default: the bundled public-domain portrait)")
    parser.add_argument("--no-video", action="store_true", help="write no mp4")
    parser.add_argument("--liveportrait-weights", help="official LivePortrait weights folder (else the weights-free "
                        "landmark renderer)")
    parser.add_argument("--idle", default="natural", metavar="natural|off|TEMPLATE",
                        help="non-mouth motion where none is given: natural (seeded blinks, brows, gaze, drift; "
                        "default), off (a frozen mean face) or a .pkl/.npz motion template")
    parser.add_argument("--size", type=int, help="longer side of the video in pixels (default: the portrait's, at "
                        "most 1024; range 64-2048)")
    parser.add_argument("--span", type=span_argument, action="append", help="edit: STREAM:START:END seconds (repeatable)")
    parser.add_argument("--duration", type=float, help="seconds to generate (default: from the text or input)")
    parser.add_argument("--speed", type=float, default=1.0, help="speaking rate factor")
    parser.add_argument("--steps", type=int, help="solver steps (default: the model's scheduler)")
    parser.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance scale, all streams")
    parser.add_argument("--cfg-audio", type=float, help="guidance scale of the audio stream")
    parser.add_argument("--cfg-motion", type=float, help="guidance scale of the motion stream")
    parser.add_argument("--uncond-joint-off", action="append", choices=["audio", "motion"],
                        help="switch this stream's joint view off in the unconditional pass (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--stem", default="sample", help="output file name stem")
    parser.add_argument("--outputs", default="wav,npz,pkl,mp4", help="comma-separated kinds to write")
    parser.set_defaults(run=_generate)


def _build(args) -> int:
    from mmflow_audio_f5tts.tokenizer import F5Tokenizer
    from mmflow_motion_liveportrait.motion_stream import MotionNormalizer

    from mmflow import FlowMatchingScheduler

    from .model import build_jamflow
    from .pipeline import JAMFlowPipeline

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = args.config
    if config.endswith(".json"):
        import json

        config = json.loads(Path(config).read_text())
    model, _ = build_jamflow(args.checkpoint, args.vocab, config, motion_dim=args.motion_dim,
                             window_seconds=args.window_seconds, joint_schedule=args.joint_schedule)
    tokenizer = F5Tokenizer.from_vocab_file(args.vocab, tokenizer_mode=args.tokenizer)
    renderer = None
    if args.liveportrait_weights:
        from mmflow_motion_liveportrait.renderer_weights import LivePortraitComponents

        renderer = LivePortraitComponents.from_liveportrait(args.liveportrait_weights)
    pipe = JAMFlowPipeline(model, FlowMatchingScheduler(), tokenizer, MotionNormalizer(), renderer=renderer)
    from mmflow.io import atomic_path

    with atomic_path(args.out) as tmp:
        pipe.save_pretrained(tmp)
    print(args.out)
    return 0


def add_build(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-jamflow",
        help="build a JAM-Flow pipeline the paper's way from an F5-TTS checkpoint (new motion stream)",
        description="F5-TTS checkpoint (audio stream, loaded strictly) + a new Motion-DiT of the same depth and "
        "heads, joint attention in the earlier half of the layers, scaled RoPE and the JAM-Flow masks; saved as "
        "a JAMFlowPipeline folder ready for training (accelerate launch recipes/jamflow.py).",
    )
    parser.add_argument("--checkpoint", required=True, help="F5-TTS model_*.safetensors / .pt")
    parser.add_argument("--vocab", required=True, help="its vocab.txt (or folder)")
    parser.add_argument("--config", default="F5TTS_v1_Base",
                        help="F5-TTS architecture name (F5TTS_v1_Base, F5TTS_Base...) or a JSON file of DiT arguments")
    parser.add_argument("--tokenizer", default="pinyin", choices=["pinyin", "char"])
    parser.add_argument("--motion-dim", type=int, default=512)
    parser.add_argument("--window-seconds", default="0.25", help="half-width of the motion stream's local window")
    parser.add_argument("--joint-schedule", default="half", help="half, full or none")
    parser.add_argument("--liveportrait-weights", help="official LivePortrait weights folder, saved into the pipeline "
                        "as its renderer")
    parser.add_argument("--out", required=True, help="pipeline folder to write")
    parser.set_defaults(run=_build)


def main(argv=None) -> int:  # pragma: no cover - convenience for `python -m mmflow_jamflow.cli`
    from mmflow.cli import main as mmflow_main

    return mmflow_main(argv if argv is not None else sys.argv[1:])
