"""Train JAM-Flow (speech + facial motion) with Accelerate and export a ``JAMFlowPipeline`` folder
(``recipes/jamflow.py`` runs ``main`` of this module).

    accelerate launch recipes/jamflow.py --config recipes/configs/jamflow_tiny.yaml
    accelerate launch recipes/jamflow.py --config recipes/configs/jamflow_paper.yaml --stage stage1 \
        --f5tts-checkpoint ckpts/model_1250000.safetensors --vocab ckpts/vocab.txt
    accelerate launch recipes/jamflow.py --config ... --stage stage2 --pretrained-pipeline outputs/stage1/pipeline

The YAML is a ``TrainingConfig`` (see docs/training.md) plus two sections this recipe reads:

``jamflow``: how to build a new model — ``audio`` (F5-TTS DiT arguments, e.g. ``text_conditioning: aligned``),
``motion_dim``, ``window_seconds``, ``joint_schedule``. Ignored when starting from ``--f5tts-checkpoint`` or
``--pretrained-pipeline``.

``pipeline``: what the exported pipeline needs besides the weights — ``tokenizer`` (``{kind: phonemes, voice,
rate, pitch}`` for espeak-aligned phonemes, or ``{kind: f5, vocab, mode}``), ``normalizer`` (``pilot`` for the
synthetic corpus's statistics, or a saved ``MotionNormalizer`` folder), ``scheduler`` (``FlowMatchingScheduler``
arguments) and ``max_seconds`` (the longest window the model samples at once).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train JAM-Flow with Accelerate and export a JAMFlowPipeline.")
    parser.add_argument("--config", required=True, help="recipe YAML (recipes/configs/jamflow_*.yaml)")
    parser.add_argument("--stage", help="stage1 (audio frozen) or stage2 (all trained); overrides `stage`")
    parser.add_argument("--output-dir", help="overrides `output_dir`")
    parser.add_argument("--total-steps", type=int, help="overrides `total_steps`")
    parser.add_argument("--seed", type=int, help="overrides `seed` (e.g. a new data order for a further phase)")
    parser.add_argument("--lr", type=float, help="overrides `optimizer.lr` (the peak learning rate)")
    parser.add_argument("--f5tts-checkpoint", help="start from an F5-TTS checkpoint (audio stream) + a new motion stream")
    parser.add_argument("--vocab", help="the F5-TTS checkpoint's vocab.txt (with --f5tts-checkpoint)")
    parser.add_argument("--pretrained-pipeline", help="fine-tune a saved JAMFlowPipeline folder")
    parser.add_argument("--lora-rank", type=int, help="fine-tune with LoRA of this rank (overrides `lora.rank`)")
    parser.add_argument("--export-only", metavar="FOLDER",
                        help="train nothing: export the newest checkpoint (or --resume FOLDER) as a pipeline to FOLDER")
    parser.add_argument("--resume", default="auto",
                        help="'auto' (newest checkpoint in output_dir, if any), 'none', or a checkpoint folder")
    return parser.parse_args(argv)


def _tokenizer(spec: dict, vocab_override: str | None = None):
    from mmflow_audio_f5tts.tokenizer import F5Tokenizer, PhonemeTokenizer

    spec = dict(spec or {"kind": "phonemes"})
    kind = spec.pop("kind", "phonemes")
    if kind == "phonemes":
        from mmflow_audio_f5tts.phonemes import PhonemeVocab

        folder = Path(tempfile.mkdtemp(prefix="jamflow-vocab-"))
        vocab = spec.pop("vocab", None)
        if vocab is None:
            PhonemeVocab().save(folder / "phonemes.txt")
            vocab = folder / "phonemes.txt"
        return PhonemeTokenizer(str(vocab), **spec)
    if kind == "f5":
        vocab = vocab_override or spec.pop("vocab")
        spec.pop("vocab", None)
        return F5Tokenizer.from_vocab_file(vocab, tokenizer_mode=spec.pop("mode", "pinyin"), **spec)
    raise ValueError(f"pipeline.tokenizer.kind must be 'phonemes' or 'f5', got {kind!r}")


def _normalizer(spec, data_kwargs: dict):
    from mmflow_motion_liveportrait.motion_stream import MotionNormalizer

    if spec in (None, "pilot"):
        from mmflow_jamflow.data.corpus import pilot_normalizer

        return pilot_normalizer(data_kwargs.get("voices"))
    return MotionNormalizer.from_pretrained(spec)


def export_pipeline(
    model_dir: Path, out: Path, pipeline, tokenizer, normalizer, vocoder=None, renderer=None
) -> Path:
    """Trained (EMA) transformer + tokenizer + normaliser + scheduler → a ``JAMFlowPipeline`` folder, atomically.

    ``vocoder`` and ``renderer`` are carried over from a fine-tuned pipeline, so its export speaks and renders
    as it did.
    """
    from mmflow import FlowMatchingScheduler, MMDiT
    from mmflow.io import atomic_path
    from mmflow_jamflow import JAMFlowPipeline

    transformer = MMDiT.from_pretrained(model_dir)
    scheduler = FlowMatchingScheduler(**pipeline.scheduler)
    pipe = JAMFlowPipeline(transformer, scheduler, tokenizer, normalizer, vocoder=vocoder, renderer=renderer,
                           max_seconds=pipeline.max_seconds)
    with atomic_path(out) as tmp:
        pipe.save_pretrained(tmp)
    logger.info("exported the JAMFlowPipeline to %s", out)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mmflow.training import (
        CheckpointError,
        ConfigError,
        Trainer,
        TrainingConfig,
        build_dataset,
        build_model,
        check_tracker,
    )
    from mmflow.training.config import read_yaml_mapping
    from mmflow_jamflow.model import jamflow_model_config
    from mmflow_jamflow.recipe_config import JamflowSection, read_sections

    try:
        raw = read_yaml_mapping(args.config, "recipe config")
        jamflow, pipeline = read_sections(raw)
    except ConfigError as error:
        logger.error(str(error))
        return 2
    overrides = {"stage": args.stage, "output_dir": args.output_dir, "total_steps": args.total_steps, "seed": args.seed}
    for key, value in overrides.items():
        if value is not None:
            raw[key] = value
    if args.lr is not None:
        raw["optimizer"] = {**(raw.get("optimizer") or {}), "lr": args.lr}
    if args.lora_rank is not None:
        raw["lora"] = {**(raw.get("lora") or {}), "rank": args.lora_rank}
    try:
        check_tracker(raw.get("tracker", "none"))  # before the tokenizer, normalizer statistics and data build
        tokenizer = _tokenizer(pipeline.tokenizer, args.vocab)
        normalizer = None
        carried = {}  # components of a fine-tuned pipeline that training does not touch
        model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
        kept = {k: v for k, v in model.items() if k == "length_buckets"}  # stays whatever builds the model
        if args.pretrained_pipeline:
            from mmflow_jamflow import JAMFlowPipeline

            source = JAMFlowPipeline.from_pretrained(args.pretrained_pipeline)
            tokenizer, normalizer = source.tokenizer, source.motion_normalizer
            carried = {"vocoder": source.vocoder, "renderer": source.renderer}
            raw["model"] = {"pretrained": str(Path(args.pretrained_pipeline) / "transformer")}
        elif args.f5tts_checkpoint:
            from mmflow_jamflow import build_jamflow

            if not args.vocab:
                raise ConfigError("--f5tts-checkpoint needs --vocab (the checkpoint's vocab.txt)")
            section = jamflow or JamflowSection()
            built, _ = build_jamflow(args.f5tts_checkpoint, args.vocab, section.audio, **section.options())
            init = Path(raw.get("output_dir", "outputs/jamflow")) / "init"
            built.save_pretrained(init)
            raw["model"] = {"pretrained": str(init)}
        elif jamflow is not None:
            raw["model"] = {"config": jamflow_model_config(jamflow.audio, len(tokenizer), **jamflow.options())}
        if kept:
            raw["model"] = {**raw["model"], **kept}
        data_kwargs = (raw.get("data") or {}).get("kwargs", {})
        if normalizer is None:
            normalizer = _normalizer(pipeline.normalizer, data_kwargs)
            if pipeline.normalizer != "pilot":
                data_kwargs["normalizer"] = pipeline.normalizer
        config = TrainingConfig.from_dict(raw)
        trainer = Trainer(config, build_model(config.model, config.seed), build_dataset(config))
    except (ConfigError, ValueError, FileNotFoundError) as error:
        logger.error(str(error))
        return 2
    if args.export_only:
        from mmflow.training import latest_checkpoint

        checkpoint = latest_checkpoint(trainer.output_dir / "checkpoints") if args.resume == "auto" else args.resume
        if checkpoint is None:
            logger.error("no checkpoint in %s to export", trainer.output_dir / "checkpoints")
            return 2
        try:
            trainer.load_checkpoint(checkpoint)
        except CheckpointError as error:
            logger.error(str(error))
            return 2
        model_dir = Path(args.export_only) / "model"
        trainer.export(model_dir)
        export_pipeline(model_dir, Path(args.export_only) / "pipeline", pipeline, tokenizer, normalizer, **carried)
        return 0
    try:
        trainer.fit(resume_from=None if args.resume == "none" else args.resume)
    except CheckpointError as error:  # a checkpoint file missing, damaged or not plain data: named, nothing run
        logger.error(str(error))
        return 2
    if trainer.accelerator.is_main_process:
        export_pipeline(trainer.output_dir / "model", trainer.output_dir / "pipeline", pipeline, tokenizer, normalizer,
                        **carried)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
