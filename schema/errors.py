"""The one error family of tfblackbox: every message names the offending file or value."""


class BlackboxError(Exception):
    """Base class of every error tfblackbox raises on purpose."""


class NotAStoreError(BlackboxError):
    """A directory that holds no tfblackbox catalog."""


class StoreVersionError(BlackboxError):
    """A store written by a newer (or unknown) format version."""


class StoreDamageError(BlackboxError):
    """A data file that is missing, truncated or differs from its catalog record."""


class RunNotFoundError(BlackboxError):
    """A run id the store does not hold."""


class WriterError(BlackboxError):
    """The background writer failed; raised on the caller's next call."""


class CatalogError(BlackboxError):
    """The catalog database refused an operation (locked too long, disk full, damaged)."""
