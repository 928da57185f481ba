"""tfblackbox.schema: the store (SQLite catalog + Parquet segments). Imports no TensorFlow."""

from .catalog import FORMAT_VERSION
from .dumps import DEBUG_GRAPHS, DEBUG_RUNS, DEBUG_TENSORS
from .errors import (BlackboxError, NotAStoreError, RunNotFoundError, StoreDamageError,
                     StoreVersionError, WriterError)
from .maintenance import compact, verify
from .records import RunRecord, WriterRecord
from .segments import SegmentRecord
from .store import Store
from .tables import HISTOGRAMS, MEDIA, SCALARS, TABLES, TENSORS

__all__ = ["Store", "RunRecord", "WriterRecord", "SegmentRecord", "BlackboxError",
           "NotAStoreError", "RunNotFoundError", "StoreDamageError", "StoreVersionError",
           "WriterError", "SCALARS", "HISTOGRAMS", "MEDIA", "TENSORS", "TABLES", "verify",
           "compact", "FORMAT_VERSION", "DEBUG_RUNS", "DEBUG_TENSORS", "DEBUG_GRAPHS"]
