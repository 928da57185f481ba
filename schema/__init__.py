"""tfblackbox.schema: the store (SQLite catalog + Parquet segments), the one row builder, and
the foreign formats every side speaks (formats/). Imports no TensorFlow."""

from .tables.tfdbg_v1 import TFDBG_V1_GRAPHS, TFDBG_V1_RUNS, TFDBG_V1_TENSORS
from .errors import (BlackboxError, CatalogError, DumpLayoutError, MergeConflictError,
                     MigrationError,
                     NativeCaptureUnavailable, NotAStoreError, ReadOnlyStoreError, ReplayError,
                     RunExistsError, RunNotFoundError, StoreDamageError, StoreVersionError,
                     WireFormatError, WriterError)
from .store.maintenance import compact, verify
from .store.migrate import FORMAT_VERSION
from .store.records import LossRecord, RunRecord, TriggerRecord, WriterRecord
from .store.segments import SegmentRecord
from .store.store import Store
from .tables import HISTOGRAMS, MEDIA, SCALARS, TABLES, TENSORS

__all__ = ["Store", "RunRecord", "WriterRecord", "TriggerRecord", "LossRecord", "SegmentRecord",
           "BlackboxError",
           "CatalogError", "DumpLayoutError", "MergeConflictError", "MigrationError",
           "NativeCaptureUnavailable",
           "NotAStoreError", "ReadOnlyStoreError", "ReplayError", "RunExistsError",
           "RunNotFoundError",
           "StoreDamageError", "StoreVersionError", "WireFormatError", "WriterError",
           "SCALARS", "HISTOGRAMS", "MEDIA", "TENSORS", "TABLES", "verify", "compact",
           "FORMAT_VERSION", "TFDBG_V1_RUNS", "TFDBG_V1_TENSORS", "TFDBG_V1_GRAPHS"]
