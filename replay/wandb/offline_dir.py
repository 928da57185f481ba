"""The `--wandb-dir` of a replay: one writer at a time, staging, and all-or-nothing publishing.

Layout of DIR:
    DIR/.tfblackbox.lock                 flock'd by the one replay writing into DIR
    DIR/.tfblackbox-staging/<run>-<hex>/ where wandb.init(dir=...) writes a chunk; never read
    DIR/offline-run-<time>-<id>/         published chunks: complete W&B offline run dirs, each
                                         with `tfblackbox-chunk.json` naming its steps

A chunk is published by one rename (same filesystem) after a clean `finish()`. Whatever is in the
staging folder when a replay takes the lock was left by a killed replay and is deleted.
"""

import contextlib
import datetime
import json
import os
import re
import shutil
import uuid

from tfblackbox.schema import BlackboxError
from tfblackbox.schema.formats.files import fsync_path

from .. import out_dirs

LOCK_FILE = ".tfblackbox.lock"
STAGING = ".tfblackbox-staging"
MARKER = "tfblackbox-chunk.json"
_NAME_RE = re.compile(r"^offline-run-(\d{8}_\d{6})-(.+)$")


class OfflineDir:
    """Context manager: locks DIR, clears stale staging, publishes chunks."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.staging = os.path.join(self.path, STAGING)
        self._lock = None

    def __enter__(self):
        out_dirs.prepare(self.path, "--wandb-dir")
        try:
            os.makedirs(self.staging, exist_ok=True)
            self._lock = open(os.path.join(self.path, LOCK_FILE), "a+")
        except OSError as e:
            raise BlackboxError(f"cannot use --wandb-dir {self.path}: {e.strerror or e}") from e
        try:
            import fcntl
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass   # no flock (Windows): one replay per directory is the user's to ensure
        except OSError as e:
            self._lock.close()
            raise BlackboxError(
                f"another replay is writing into {self.path} (its lock {LOCK_FILE} is held); "
                f"wait for it to end or use another --wandb-dir") from e
        self.clear_staging()
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(OSError):
            os.rmdir(self.staging)   # only if empty: a failed chunk stays for inspection
        if self._lock is not None:
            self._lock.close()     # releases the flock
            self._lock = None

    def clear_staging(self):
        """Deletes every staged chunk: with the lock held, none belongs to a live replay."""
        for name in os.listdir(self.staging):
            shutil.rmtree(os.path.join(self.staging, name), ignore_errors=True)

    def new_staging(self, run_id):
        path = os.path.join(self.staging, f"{_safe(run_id)}-{uuid.uuid4().hex[:8]}")
        os.makedirs(path)
        return path

    def discard(self, staging_path):
        shutil.rmtree(staging_path, ignore_errors=True)

    def final_name(self, sync_dir, wandb_id):
        """A name for the published chunk that no published chunk has: wandb's own
        `offline-run-<time>-<id>`, its time moved on a second while the name is taken."""
        m = _NAME_RE.match(os.path.basename(sync_dir))
        when = (datetime.datetime.strptime(m.group(1), "%Y%m%d_%H%M%S") if m
                else datetime.datetime.now().replace(microsecond=0))
        while True:
            name = f"offline-run-{when:%Y%m%d_%H%M%S}-{wandb_id}"
            if not os.path.lexists(os.path.join(self.path, name)):
                return name
            when += datetime.timedelta(seconds=1)

    def publish(self, sync_dir, name, marker):
        """Writes the chunk's marker, then renames the finished run dir into DIR as `name`."""
        with open(os.path.join(sync_dir, MARKER), "w") as f:
            json.dump(marker, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _fsync_tree(sync_dir)
        os.rename(sync_dir, os.path.join(self.path, name))
        fsync_path(self.path)

    def published(self, name, chunk):
        """The marker of the published chunk `name` if it is `chunk`, else None."""
        try:
            with open(os.path.join(self.path, name, MARKER)) as f:
                marker = json.load(f)
        except (OSError, ValueError):
            return None
        return marker if marker.get("chunk") == chunk else None


def _safe(text):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64]


def _fsync_tree(root):
    """fsyncs the files of a finished run dir so that a published chunk survives a power cut."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fsync_path(os.path.join(folder, name))
        fsync_path(folder)
