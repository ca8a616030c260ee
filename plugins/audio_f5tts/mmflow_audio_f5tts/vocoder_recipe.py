"""Train a small Vocos on espeak-ng speech of the synthetic corpus sentences, with Accelerate.

    accelerate launch recipes/vocoder.py --config recipes/configs/vocoder_small.yaml
    python recipes/vocoder.py --config recipes/configs/vocoder_small.yaml --total-steps 200 --output-dir /tmp/voc

(``recipes/vocoder.py`` runs ``main`` of this module; the audio plugin owns the recipe so that it and its tests
need no face plugin.)

Why: the embedded JAM-Flow model ships without a vocoder, so its mels go through Griffin-Lim. This trains the
repository's ``Vocos`` (diffusers ``ModelMixin``) from spectral losses only (multi-resolution STFT + log-mel L1,
``mmflow_audio_f5tts.vocoder_training``), which fits a CPU budget; no GAN.

The speech is the corpus's own: clip ``i`` is ``speak_clip(i, CorpusConfig(...))``
(``mmflow_audio_f5tts.speech_corpus``), the sentence and voice the JAM-Flow corpus draws for it (never one of the held-out sentences), synthesised once and kept in memory.
Batch ``n`` depends only on ``(seed, n)``, so a run resumed from a checkpoint (``<output_dir>/checkpoints``,
written to a temporary folder and renamed) continues exactly. The trained vocoder is saved with
``save_pretrained`` to ``<output_dir>/vocoder``; ``load_vocoder`` and ``benchmarks/jamflow_eval.py --vocoder``
read it. Finally the resynthesis mel L1 (vocoder output re-analysed vs its input mel) is measured on
held-out sentences for the vocoder and for Griffin-Lim and written to ``<output_dir>/resynthesis.json``.

Every key of the YAML is listed in ``VocoderRecipeConfig``; unknown keys and impossible values are errors
that name the key.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

from mmflow.training.config import OptimizerConfig

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ config


@dataclass
class CorpusSection:
    """Which corpus clips to speak: the arguments of the speech corpus (``mmflow_audio_f5tts.speech_corpus``)."""

    num_clips: int = 1200
    seed: int = 0
    voices: list = field(default_factory=lambda: ["en-us"])
    rates: list | None = field(default_factory=lambda: [150, 165, 180])
    min_seconds: float = 1.0
    max_seconds: float = 4.0


@dataclass
class VocoderSection:
    """``Vocos`` backbone size (the head's STFT is the mel's: n_fft 1024, hop 256, centred)."""

    dim: int = 192
    intermediate_dim: int = 512
    num_layers: int = 6
    layer_scale_init_value: float | None = None


@dataclass
class LossSection:
    fft_sizes: list = field(default_factory=lambda: [512, 1024, 2048])
    mel_weight: float = 1.0
    sc_weight: float = 1.0
    log_mag_weight: float = 1.0


@dataclass
class CheckpointSection:
    every: int = 500  # optimizer steps between checkpoints; 0 = only at the end
    keep_last: int = 2


@dataclass
class HeldOutSection:
    """Held-out sentences (``HELD_OUT_SENTENCES``, the first ``sentences``) for the resynthesis mel L1."""

    sentences: int = 5
    voice: str = "en-us"
    rate: int = 165


@dataclass
class VocoderRecipeConfig:
    output_dir: str
    total_steps: int
    seed: int = 0
    batch_size: int = 16
    segment_seconds: float = 0.75
    warmup_steps: int = 200
    max_grad_norm: float = 1.0
    log_every: int = 50
    max_minutes: float | None = None  # stop (checkpoint + save) after this wall time even if steps remain
    corpus: CorpusSection = field(default_factory=CorpusSection)
    vocoder: VocoderSection = field(default_factory=VocoderSection)
    loss: LossSection = field(default_factory=LossSection)
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=3e-3, betas=(0.8, 0.99)))
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    held_out: HeldOutSection = field(default_factory=HeldOutSection)

    @property
    def segment_frames(self) -> int:
        """Mel frames per segment (the waveform is ``(frames - 1) · 256`` samples)."""
        from mmflow_audio_f5tts.mel import FRAME_RATE

        return 1 + round(self.segment_seconds * float(FRAME_RATE))

    def validate(self) -> VocoderRecipeConfig:
        from mmflow.training.config import ConfigError
        from mmflow_audio_f5tts.mel import HOP_LENGTH

        c = self
        checks = [
            (c.total_steps >= 1, "total_steps", f"must be >= 1, got {c.total_steps}"),
            (c.batch_size >= 1, "batch_size", f"must be >= 1, got {c.batch_size}"),
            (0 <= c.warmup_steps < c.total_steps, "warmup_steps",
             f"must be in [0, total_steps={c.total_steps}), got {c.warmup_steps}"),
            (c.max_grad_norm > 0, "max_grad_norm", f"must be > 0, got {c.max_grad_norm}"),
            (c.log_every >= 1, "log_every", f"must be >= 1, got {c.log_every}"),
            (c.max_minutes is None or c.max_minutes > 0, "max_minutes", f"must be > 0 or null, got {c.max_minutes}"),
            (c.segment_seconds > 0, "segment_seconds", f"must be > 0, got {c.segment_seconds}"),
            (c.corpus.num_clips >= 1, "corpus.num_clips", f"must be >= 1, got {c.corpus.num_clips}"),
            (0 < c.corpus.min_seconds <= c.corpus.max_seconds, "corpus.min_seconds",
             f"need 0 < min_seconds <= max_seconds, got {c.corpus.min_seconds}, {c.corpus.max_seconds}"),
            (c.segment_seconds <= c.corpus.min_seconds, "segment_seconds",
             f"{c.segment_seconds} s is longer than the shortest clips (corpus.min_seconds={c.corpus.min_seconds})"),
            (bool(c.corpus.voices) and all(isinstance(v, str) for v in c.corpus.voices), "corpus.voices",
             f"must be a non-empty list of espeak voice names, got {c.corpus.voices!r}"),
            (c.corpus.rates is None or all(isinstance(r, int) and not isinstance(r, bool) for r in c.corpus.rates),
             "corpus.rates", f"must be a list of words-per-minute integers or null, got {c.corpus.rates!r}"),
            (min(c.vocoder.dim, c.vocoder.intermediate_dim, c.vocoder.num_layers) >= 1, "vocoder",
             f"dim, intermediate_dim and num_layers must be >= 1, got {asdict(c.vocoder)}"),
            (bool(c.loss.fft_sizes) and all(isinstance(n, int) and n >= 16 and n % 4 == 0 for n in c.loss.fft_sizes),
             "loss.fft_sizes", f"must be a list of integers >= 16 divisible by 4, got {c.loss.fft_sizes!r}"),
            (min(c.loss.mel_weight, c.loss.sc_weight, c.loss.log_mag_weight) >= 0
             and c.loss.mel_weight + c.loss.sc_weight + c.loss.log_mag_weight > 0, "loss",
             "the weights must be >= 0 and not all 0"),
            (c.checkpoint.every >= 0, "checkpoint.every", f"must be >= 0 (0: only at the end), got {c.checkpoint.every}"),
            (c.checkpoint.keep_last >= 1, "checkpoint.keep_last", f"must be >= 1, got {c.checkpoint.keep_last}"),
            (0 <= c.held_out.sentences <= 20, "held_out.sentences", f"must be in [0, 20], got {c.held_out.sentences}"),
        ]
        for ok, key, message in checks:
            if not ok:
                raise ConfigError(f"{key}: {message}")
        c.optimizer.validate("optimizer")  # the AdamW settings of mmflow.training, checked the same way
        longest_fft = max(c.loss.fft_sizes)
        if (c.segment_frames - 1) * HOP_LENGTH <= longest_fft // 2:
            raise ConfigError(f"segment_seconds: {c.segment_seconds} s is too short for loss.fft_sizes up to "
                              f"{longest_fft} (the STFT needs more than {longest_fft // 2} samples)")
        return self


def load_config(path: str | Path, overrides: dict | None = None) -> VocoderRecipeConfig:
    """Read and check the recipe YAML; ``overrides`` (top-level keys) win over the file."""
    from mmflow.training.config import ConfigError, _build, read_yaml_mapping

    raw = read_yaml_mapping(path, "vocoder config")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return _build(VocoderRecipeConfig, raw, "config").validate()
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


# ------------------------------------------------------------------------------------------------ data


def corpus_waveforms(section: CorpusSection) -> list:
    """The espeak-ng waveforms of corpus clips ``0 … num_clips-1`` (deterministic: ``speak_clip``)."""
    from tqdm.auto import tqdm

    from .espeak import EspeakEngine
    from .speech_corpus import CorpusConfig, speak_clip

    config = CorpusConfig.build(section.seed, section.voices, section.rates, section.min_seconds, section.max_seconds)
    engine = EspeakEngine()
    started = time.perf_counter()
    waves = [speak_clip(i, config, engine)[0].waveform
             for i in tqdm(range(section.num_clips), desc="espeak-ng corpus", unit="clip")]
    seconds = sum(len(w) for w in waves) / engine.sample_rate
    logger.info("synthesised %d clips (%.1f min of speech) in %.1f s", len(waves), seconds / 60,
                time.perf_counter() - started)
    return waves


# ------------------------------------------------------------------------------------------------ training


def build_vocoder(config: VocoderRecipeConfig):
    from mmflow_audio_f5tts.vocoder import Vocos

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return Vocos(**asdict(config.vocoder))


def resynthesis_report(vocoder, section: HeldOutSection) -> dict:
    """Resynthesis mel L1 of ``vocoder`` and of Griffin-Lim on the first held-out sentences."""
    from mmflow_audio_f5tts.espeak import EspeakEngine, Voice
    from mmflow_audio_f5tts.mel import MelSpectrogram
    from mmflow_audio_f5tts.vocoder import GriffinLimVocoder
    from mmflow_audio_f5tts.vocoder_training import resynthesis_mel_l1

    from .sentences import HELD_OUT_SENTENCES

    engine, mel, griffin_lim = EspeakEngine(), MelSpectrogram(), GriffinLimVocoder()
    voice = Voice(section.voice, rate=section.rate)
    rows = []
    for text in HELD_OUT_SENTENCES[: section.sentences]:
        target = mel(torch.from_numpy(engine.synthesize(text, voice).waveform))[0]
        rows.append({"text": text, "vocoder": resynthesis_mel_l1(vocoder, target),
                     "griffin_lim": resynthesis_mel_l1(griffin_lim, target)})
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("vocoder", "griffin_lim")} if rows else {}
    return {"metric": "mean |log-mel(vocoder(mel)) - mel| on held-out espeak-ng sentences",
            "voice": asdict(voice), "mean": mean, "sentences": rows}


def train(config: VocoderRecipeConfig, resume: str = "auto") -> Path:
    """Train as ``config`` says (resuming from ``resume``: 'auto', 'none' or a checkpoint folder)."""
    from accelerate import Accelerator
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from tqdm.auto import tqdm

    from mmflow.io import atomic_path, write_text_atomic
    from mmflow.training.checkpoint import latest_checkpoint, save_checkpoint
    from mmflow.training.process_group import end_process_group_at_exit
    from mmflow.training.resume import load_plain, restore_accelerator_state
    from mmflow_audio_f5tts.mel import SAMPLE_RATE
    from mmflow_audio_f5tts.vocoder_training import SegmentSampler, VocoderLoss

    output_dir = Path(config.output_dir)
    accelerator = Accelerator(project_dir=str(output_dir))
    end_process_group_at_exit()
    model = build_vocoder(config)
    logger.info("Vocos %s: %s parameters", asdict(config.vocoder), f"{sum(p.numel() for p in model.parameters()):,}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optimizer.lr, betas=tuple(config.optimizer.betas),
                                  weight_decay=config.optimizer.weight_decay, eps=config.optimizer.eps)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    loss_fn = VocoderLoss(config.loss.fft_sizes, config.loss.mel_weight, config.loss.sc_weight,
                          config.loss.log_mag_weight).to(accelerator.device)

    step = 0
    checkpoint = latest_checkpoint(output_dir / "checkpoints") if resume == "auto" else (
        None if resume == "none" else Path(resume))
    if checkpoint is not None:
        restore_accelerator_state(accelerator, checkpoint, model, optimizer, scheduler)  # runs no code from it
        step = load_plain(checkpoint / "trainer_state_0.pt", "trainer state")["step"]
        logger.info("resumed from %s at step %d", checkpoint, step)

    def write_state(folder: Path) -> None:
        torch.save({"step": step}, folder / f"trainer_state_{accelerator.process_index}.pt")
        (folder / "config.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))

    def checkpoint_now() -> None:
        save_checkpoint(accelerator, output_dir / "checkpoints", step, write_state, config.checkpoint.keep_last)

    finished = step >= config.total_steps
    if not finished:
        sampler = SegmentSampler(corpus_waveforms(config.corpus), config.segment_frames, config.seed)
        logger.info("%d utterances, %.1f min; segments of %d frames (%.2f s), batch %d", len(sampler),
                    sampler.seconds / 60, config.segment_frames, sampler.segment_samples / SAMPLE_RATE, config.batch_size)
    started, sums, count, tick = time.perf_counter(), {}, 0, time.perf_counter()
    last_saved = step
    progress = tqdm(total=config.total_steps, initial=step, desc="vocoder", disable=not accelerator.is_main_process)
    model.train()
    while step < config.total_steps:
        wave, mel = (t.to(accelerator.device) for t in sampler.batch(config.batch_size, step))
        terms = loss_fn(model(mel), wave)
        accelerator.backward(terms.total)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update(1)
        for key, value in terms.as_floats().items():
            sums[key] = sums.get(key, 0.0) + value
        count += 1
        if not math.isfinite(sums["total"]):
            raise FloatingPointError(f"step {step}: the loss is {sums['total']}; lower optimizer.lr")
        if step % config.log_every == 0 or step == config.total_steps:
            metrics = {"step": step, **{k: v / count for k, v in sums.items()}, "lr": scheduler.get_last_lr()[0],
                       "grad_norm": float(grad_norm), "steps_per_s": count / (time.perf_counter() - tick)}
            progress.set_postfix(loss=f"{metrics['total']:.4f}")
            logger.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
            if accelerator.is_main_process:
                with open(output_dir / "train_log.jsonl", "a") as log:
                    log.write(json.dumps(metrics) + "\n")
            sums, count, tick = {}, 0, time.perf_counter()
        if config.checkpoint.every and step % config.checkpoint.every == 0:
            checkpoint_now()
            last_saved = step
        if config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes:
            logger.warning("max_minutes=%g reached at step %d of %d: saving; the LR schedule did not finish "
                           "(run again to resume)", config.max_minutes, step, config.total_steps)
            break
    progress.close()
    if last_saved != step:
        checkpoint_now()

    accelerator.wait_for_everyone()
    vocoder_dir = output_dir / "vocoder"
    if accelerator.is_main_process:
        vocoder = accelerator.unwrap_model(model).eval()
        with atomic_path(vocoder_dir) as tmp:
            vocoder.save_pretrained(tmp)
        logger.info("saved the vocoder (step %d) to %s", step, vocoder_dir)
        if config.held_out.sentences:
            report = {"step": step, **resynthesis_report(vocoder, config.held_out)}
            write_text_atomic(output_dir / "resynthesis.json", json.dumps(report, indent=2) + "\n")
            logger.info("held-out resynthesis mel L1: vocoder %.4f, Griffin-Lim %.4f", report["mean"]["vocoder"],
                        report["mean"]["griffin_lim"])
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return vocoder_dir


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a small Vocos on espeak-ng speech of the corpus sentences.")
    parser.add_argument("--config", required=True, help="recipe YAML (recipes/configs/vocoder_small.yaml)")
    parser.add_argument("--output-dir", help="overrides `output_dir`")
    parser.add_argument("--total-steps", type=int, help="overrides `total_steps`")
    parser.add_argument("--max-minutes", type=float, help="overrides `max_minutes`")
    parser.add_argument("--resume", default="auto",
                        help="'auto' (newest checkpoint in output_dir, if any), 'none', or a checkpoint folder")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mmflow.training.config import ConfigError

    try:
        config = load_config(args.config, {"output_dir": args.output_dir, "total_steps": args.total_steps,
                                           "max_minutes": args.max_minutes})
        if args.resume not in ("auto", "none") and not (Path(args.resume) / "trainer_state_0.pt").is_file():
            raise ConfigError(f"--resume: {args.resume} is not a checkpoint folder of this recipe")
    except ConfigError as error:
        logger.error(str(error))
        return 2
    from mmflow.io import writable_folder
    from mmflow.training.resume import CheckpointError

    writable_folder(config.output_dir)
    try:
        train(config, args.resume)
    except CheckpointError as error:  # a checkpoint file missing, damaged or not plain data: named, nothing run
        logger.error(str(error))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
