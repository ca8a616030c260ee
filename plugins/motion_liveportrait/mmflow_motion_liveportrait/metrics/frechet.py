"""Fréchet distance between two feature sets, and the set-level metric FID and FVD share.

The distance is pytorch-fid's ``calculate_frechet_distance`` (``src/pytorch_fid/fid_score.py``):
``|mu1 - mu2|² + Tr(S1 + S2 - 2 sqrtm(S1 S2))`` with ``scipy.linalg.sqrtm``; a non-finite square root is retried
with 1e-6 added to both diagonals, and an imaginary part on the diagonal above 1e-3 is an error (else dropped).

``FrechetMetric.score`` turns each generated video and its reference into features once and caches them in the
metric's workdir, keyed by the file's sha256 and the protocol (network weights, options), so a reference shared
by many samples is processed once and a resumed evaluation recomputes nothing. ``summarise`` pools the generated
features, pools the distinct references' features and reports the distance between the two sets.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import linalg

from mmflow.codecs import InputError
from mmflow.evaluation import Sample
from mmflow.io import atomic_path

from .evaluator_weights import file_digest

logger = logging.getLogger(__name__)

SINGULAR_EPS = 1e-6
IMAGINARY_TOLERANCE = 1e-3


def feature_statistics(features: np.ndarray, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``N×D`` features in float64; ``ddof=1`` is np.cov's (pytorch-fid), 0 StyleGAN-V's."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 feature vectors, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False, ddof=ddof)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = SINGULAR_EPS) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed as pytorch-fid does."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature sets differ in size: means {mu1.shape} vs {mu2.shape}, "
                         f"covariances {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))  # pytorch-fid's disp=False only adds an unused error estimate
    if not np.isfinite(covmean).all():
        logger.warning("Fréchet distance: singular product; adding %s to the diagonal of the covariances", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_TOLERANCE):
            raise ValueError(f"Fréchet distance: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


class FrechetMetric:
    """A set-level metric over ``video`` files: features per file (cached), one distance for the whole set.

    ``extract(path) -> N×D float32`` gives a file's features (N frames or clips; N may be 0, e.g. a video too
    short for one clip). ``protocol`` names everything the features depend on besides the file; it is part of
    the cache key. ``ddof`` is the covariance's normalisation (see ``feature_statistics``).
    """

    needs = frozenset({"video"})
    reference_needs = frozenset({"video"})
    higher_is_better = False

    def __init__(self, name: str, workdir: Path, extract: Callable[[Path], np.ndarray], protocol: str,
                 batch_size: int = 1, ddof: int = 1) -> None:
        self.name = name
        self.directions = {name: False}
        self.batch_size = batch_size
        self.extract = extract
        self.ddof = ddof
        self.protocol_digest = hashlib.sha256(protocol.encode()).hexdigest()
        self.features_dir = Path(workdir) / "features"
        self._seen: dict[tuple[str, int, int], tuple[str, int]] = {}

    def score(self, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        rows = []
        for sample in samples:
            generated = self._file(sample.files, "video", sample.id, "generated")
            reference = self._file(sample.reference, "video", sample.id, "reference")
            key, count = self._features(generated)
            reference_key, reference_count = self._features(reference)
            rows.append({"features": key, "count": count,
                         "reference_features": reference_key, "reference_count": reference_count})
        return rows

    def summarise(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        generated = [self._load(row["features"]) for row in rows]
        references = [self._load(key) for key in dict.fromkeys(row["reference_features"] for row in rows)]
        generated, references = np.concatenate(generated), np.concatenate(references)
        for label, features in (("generated", generated), ("reference", references)):
            if features.shape[0] < 2:
                raise InputError(f"{self.name}: the {label} set gave {features.shape[0]} feature vectors; the "
                                 f"distance needs at least 2 (more samples, or longer videos)")
        distance = frechet_distance(*feature_statistics(generated, self.ddof),
                                    *feature_statistics(references, self.ddof))
        return {self.name: distance, f"{self.name}_generated_features": float(generated.shape[0]),
                f"{self.name}_reference_features": float(references.shape[0])}

    def _file(self, files: Mapping[str, Path], kind: str, sample_id: str, label: str) -> Path:
        if kind not in files:
            raise InputError(f"{self.name}: sample {sample_id!r} has no {label} {kind!r} file; "
                             f"{self.name} compares generated videos with reference videos")
        return Path(files[kind])

    def _features(self, path: Path) -> tuple[str, int]:
        """Cache key and count of ``path``'s features, extracting them unless cached."""
        stat = path.stat()
        seen = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if seen in self._seen:  # a reference shared by many samples is not hashed again
            return self._seen[seen]
        self._seen[seen] = self._features_of_content(path)
        return self._seen[seen]

    def _features_of_content(self, path: Path) -> tuple[str, int]:
        key = f"{file_digest(path)[:32]}-{self.protocol_digest[:16]}"
        cached = self.features_dir / f"{key}.npy"
        if cached.is_file():
            return key, int(np.load(cached, mmap_mode="r").shape[0])
        features = np.asarray(self.extract(path), dtype=np.float32)
        self.features_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, features, allow_pickle=False)
        logger.info("%s: %d feature vectors from %s", self.name, features.shape[0], path)
        return key, int(features.shape[0])

    def _load(self, key: str) -> np.ndarray:
        cached = self.features_dir / f"{key}.npy"
        if not cached.is_file():
            raise InputError(f"{self.name}: cached features {cached} are missing (the evaluation folder was "
                             f"changed); delete the {self.name} rows of the evaluation so they are recomputed")
        return np.load(cached, allow_pickle=False)
