"""The one error family of tfblackbox: every class is named for what went wrong, and every
message names the offending file or value and what was expected."""


class BlackboxError(Exception):
    """Base class of every error tfblackbox raises on purpose."""


class NotAStoreError(BlackboxError):
    """A directory that holds no tfblackbox catalog."""


class StoreVersionError(BlackboxError):
    """A store written by a newer (or unknown) format version."""


class ReadOnlyStoreError(BlackboxError):
    """A write asked of a store opened to read (readers change nothing)."""


class StoreDamageError(BlackboxError):
    """A data file that is missing, truncated or differs from its catalog record."""


class RunNotFoundError(BlackboxError):
    """A run id the store does not hold."""


class RunExistsError(BlackboxError):
    """A run id that is taken, where a new run was asked for."""


class WriterError(BlackboxError):
    """The background writer failed; raised on the caller's next call."""


class CatalogError(BlackboxError):
    """The catalog database refused an operation (locked too long, disk full, damaged)."""


class WireFormatError(BlackboxError):
    """Bytes that are not the protobuf message (or record framing) they should be."""


class DumpLayoutError(BlackboxError):
    """A dump directory, or a name stored for one, that does not fit tfdbg's layout."""


class NativeCaptureUnavailable(BlackboxError):
    """The in-memory dump capture cannot be built or loaded here (no compiler, no TF library,
    a failed self-test); DumpHook falls back to files unless capture="memory"."""


class ReplayError(BlackboxError):
    """A destination did not take what a replay pushed (W&B refused a chunk); the cursor
    did not move."""


class MigrationError(BlackboxError):
    """A store's catalog could not be upgraded to this version's format."""


class MergeConflictError(BlackboxError):
    """Stores to merge hold different runs (or attempts) under the same id."""


class MissingExtraError(BlackboxError, ImportError):
    """An optional dependency a feature needs is not installed; the message names the extra
    that brings it (`pip install 'tfblackbox[pandas]'`)."""
