"""The execution memory: contexts of finished attempts in Qdrant, searchable by similarity.

Off unless ``Settings.memory`` (``PGQ_MEMORY=true``) or ``PGQ_QDRANT_URL`` is
set. ``writer`` keeps contexts off the worker's hot path, ``store`` is the
Qdrant collection (local mode or a server), ``embedders`` turn contexts into
384-float vectors, ``search`` answers "which past executions look like this
one, and how did they end", ``clusters`` groups the dead letter queue by
failure. Job state stays Postgres's: the memory only adds search.
"""

from pgq.memory.context import ExecutionContext, normalise_message, traceback_frames
from pgq.memory.embedders import DIMENSION, Embedder, LexicalEmbedder, make_embedder

__all__ = ["DIMENSION", "Embedder", "ExecutionContext", "LexicalEmbedder", "make_embedder", "normalise_message",
           "traceback_frames"]
