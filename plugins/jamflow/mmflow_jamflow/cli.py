"""``mmflow generate`` and ``mmflow build-jamflow``: the JAM-Flow pipeline from the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mmflow.generate_command import (
    add_length_buckets_option,
    apply_length_buckets,
    collect_spans,
    span_argument,
)

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
  # F5-TTS's options: text from a file, silences shortened, a TOML config (F5-TTS's keys work too)
  mmflow generate --gen-file story.txt --remove-silence --sway -1 --cross-fade 0.15 --out outputs/story
  mmflow generate --config basic.toml
"""

F5_CONFIG_KEYS = {
    "gen_text": "text", "gen_file": "gen_file", "ref_audio": "ref_audio", "ref_text": "ref_text",
    "remove_silence": "remove_silence", "output_dir": "out", "output_file": "output_file", "target_rms": "target_rms",
    "cross_fade_duration": "cross_fade", "nfe_step": "steps", "cfg_strength": "cfg",
    "sway_sampling_coef": "sway", "speed": "speed", "device": "device", "vocoder": "vocoder",
}
"""``f5-tts_infer-cli`` TOML keys and the options they set here (same meanings)."""
F5_UNSUPPORTED = {
    "model": "a JAM-Flow folder goes in `model` / --model (F5-TTS's architecture names do not apply)",
    "ckpt_file": "build a JAM-Flow folder from an F5-TTS checkpoint with `mmflow build-jamflow`",
    "vocab_file": "the vocabulary is part of a JAM-Flow folder (`mmflow build-jamflow --vocab`)",
    "fix_duration": "use `duration` (seconds after the reference; F5-TTS counts the reference too)",
}


def read_config(path: str) -> dict:
    """A TOML config as option defaults: this command's option names (``ref_text``, ``steps``...) and
    ``f5-tts_infer-cli``'s keys (``gen_text``, ``nfe_step``...); empty strings count as unset, as in F5-TTS."""
    import tomllib

    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"--config {path!r} is not valid TOML: {error}") from None
    own = {action.dest for action in _generate_subparser(generate_parser())._actions
           if action.dest not in ("help", "config")}
    defaults = {}
    for key, value in data.items():
        if key in F5_UNSUPPORTED:
            raise ValueError(f"--config {path!r}: key {key!r} is not supported here: {F5_UNSUPPORTED[key]}")
        dest = F5_CONFIG_KEYS.get(key, key)
        if dest not in own:
            raise ValueError(f"--config {path!r}: unknown key {key!r}; use this command's option names "
                             f"({', '.join(sorted(own))}) or F5-TTS's ({', '.join(sorted(F5_CONFIG_KEYS))})")
        if value != "":
            defaults[dest] = value
    return defaults


def generate_parser() -> argparse.ArgumentParser:
    """The parser of ``mmflow generate`` for JAM-Flow models."""
    parser = argparse.ArgumentParser(prog="mmflow")
    add_generate(parser.add_subparsers())
    return parser


def _generate_subparser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return parser._subparsers._group_actions[0].choices["generate"]


def parse_generate_args(argv: list[str]) -> argparse.Namespace:
    """``mmflow generate`` arguments; a ``--config FILE.toml`` supplies defaults that flags override."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config")
    known, _ = early.parse_known_args(argv)
    parser = generate_parser()
    if known.config:
        _generate_subparser(parser).set_defaults(**read_config(known.config))
    args = parser.parse_args(["generate", *argv])
    if not args.out:
        parser.error("--out (or output_dir in --config) is required")
    return args


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

    if args.gen_file:
        if args.text:
            raise ValueError("give the text with --text or --gen-file, not both")
        try:
            args.text = Path(args.gen_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"--gen-file {args.gen_file!r}: cannot read it as UTF-8 text ({error})") from None
    if args.output_file:
        name = Path(args.output_file)
        if name.suffix.lower() != ".wav" or name.name != args.output_file:
            raise ValueError(f"--output-file {args.output_file!r} must be a file name ending in .wav (the wav's name "
                             f"in --out; the other outputs take the same stem)")
        args.stem = name.stem
    kinds = [kind.strip() for kind in args.outputs.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(OUTPUT_KINDS))
    if unknown:
        raise ValueError(f"--outputs has unknown kind(s) {unknown}; choose from {','.join(OUTPUT_KINDS)}")
    for path in output_paths(args.out, args.stem, kinds)[0].values():
        check_replaceable_file(path)
    check_call_arguments(speed=args.speed, duration=args.duration, num_inference_steps=args.steps,
                         guidance_scale=_guidance(args), seed=args.seed, spans=_spans(args),
                         sway_coefficient=args.sway, cross_fade=args.cross_fade)
    with output_folder(args.out) as folder, folder_lock(folder):
        return _generate_into(Path(args.out), kinds, args)


def _generate_into(out: Path, kinds: list[str], args) -> int:
    import torch

    from .default_model import default_model_path
    from .pipeline import JAMFlowPipeline

    model = Path(args.model) if args.model else default_model_path()
    pipe = JAMFlowPipeline.from_pretrained(model)
    apply_length_buckets(pipe, args.length_buckets)
    if args.vocoder:  # this run's vocoder instead of the folder's
        from mmflow_audio_f5tts.vocoder import load_vocoder

        pipe.register_modules(vocoder=None if args.vocoder == "griffin-lim" else load_vocoder(args.vocoder))
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
        target_rms=args.target_rms,
        resampler=args.resampler,
        num_inference_steps=args.steps,
        guidance_scale=guidance,
        uncond_joint_view={stream: False for stream in args.uncond_joint_off or []},
        joint_attention=args.joint_attention,
        seed=args.seed,
        sway_coefficient=args.sway,
        cross_fade=args.cross_fade,
    )
    if args.remove_silence:
        result = result.remove_silence()
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
                        help="a task of the model (`mmflow tasks`; default talking_head)")
    parser.add_argument("--config", help="TOML file of option defaults (these option names, or f5-tts_infer-cli's "
                        "keys such as gen_text, nfe_step, cfg_strength); flags override it")
    parser.add_argument("--model", help="saved JAMFlowPipeline folder (default: the embedded default model)")
    parser.add_argument("--text", help="text to say (edit: the transcript of the result)")
    parser.add_argument("--gen-file", help="read the text to say from this UTF-8 file (F5-TTS's --gen_file)")
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
    parser.add_argument("--target-rms", type=float, help="loudness a quiet reference is raised to (default 0.1, "
                        "F5-TTS's --target_rms)")
    parser.add_argument("--resampler", choices=["soxr", "f5"], help="resampling of a reference at another rate: "
                        "soxr (default) or f5 (F5-TTS's exact windowed sinc, as its own inference does)")
    parser.add_argument("--sway", type=float, help="sway sampling coefficient in [-1, 1] (default: the model's "
                        "scheduler; F5-TTS's --sway_sampling_coef)")
    parser.add_argument("--cross-fade", type=float, help="seconds of cross-fade between text chunks (default 0.16; "
                        "F5-TTS's --cross_fade_duration)")
    parser.add_argument("--remove-silence", action="store_true", help="shorten silences over 1 s in the outputs, "
                        "speech, motion and video alike (F5-TTS's --remove_silence)")
    parser.add_argument("--vocoder", help="a Vocos folder or 'griffin-lim' for this run (default: the model's)")
    parser.add_argument("--joint-attention", action=argparse.BooleanOptionalAction, default=True,
                        help="couple speech and motion (--no-joint-attention: each stream alone, the ablation)")
    parser.add_argument("--steps", type=int, help="solver steps (default: the model's scheduler)")
    parser.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance scale, all streams")
    parser.add_argument("--cfg-audio", type=float, help="guidance scale of the audio stream")
    parser.add_argument("--cfg-motion", type=float, help="guidance scale of the motion stream")
    parser.add_argument("--uncond-joint-off", action="append", choices=["audio", "motion"],
                        help="switch this stream's joint view off in the unconditional pass (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="output folder (required, here or as output_dir in --config)")
    parser.add_argument("--stem", default="sample", help="output file name stem")
    parser.add_argument("--output-file", help="name of the wav in --out, e.g. speech.wav (F5-TTS's --output_file); "
                        "the other outputs take its stem")
    parser.add_argument("--outputs", default="wav,npz,pkl,mp4", help="comma-separated kinds to write")
    add_length_buckets_option(parser)
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
