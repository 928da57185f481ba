"""Where a store's data files live: a local directory, or any filesystem pyarrow reaches by URI
(s3://, gs://, hdfs://, abfs://). Every data-file operation of the store goes through here.

A local directory keeps the store's own protocol: a temporary name (leading '.'), fsync,
rename, fsync of the directory. An object store has neither rename nor fsync, but an object
appears whole when its upload completes: a new file is uploaded under its final, unique name
(and registered by the caller after that); a failed upload is deleted, and whatever a killed
process left unregistered is an orphan that `verify` removes after the grace period.

Credentials never leave the process: the URI recorded in the catalog or printed (`uri`) has
no user, password or key in it; readers take theirs from the usual environment
(AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, ...).
"""

import contextlib
import hashlib
import os
import re
import urllib.parse
import uuid

from ..errors import NotAStoreError
from ..formats.files import durable_file, write_durably

_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# query keys of a pyarrow filesystem URI that hold secrets (pyarrow reads keys from userinfo;
# others are for filesystems that may take them as options)
_SECRET_KEYS = re.compile(r"(key|secret|token|password|credential|signature|sas)", re.I)
HASH_BLOCK = 1 << 20


def is_uri(spec):
    return bool(_URI_RE.match(str(spec)))


def strip_credentials(uri):
    """`uri` without user, password or secret-looking query values (for catalogs, logs)."""
    parts = urllib.parse.urlsplit(uri)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if not _SECRET_KEYS.search(k)]
    if "@" not in parts.netloc and len(kept) == len(pairs):
        return uri
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path,
                                    urllib.parse.urlencode(kept, safe=":/"), ""))


class DataLocation:
    """The root below which a store keeps `data/<table>/run_id=<run>/*.parquet`.

    `rel` paths are the ones the catalog registers ('data/scalars/run_id=r/w-....parquet')."""

    def __init__(self, spec):
        spec = os.fspath(spec)
        if is_uri(spec) and not spec.startswith("file://"):
            import pyarrow as pa
            import pyarrow.fs as pafs
            self.uri = strip_credentials(spec)
            try:
                self.fs, base = pafs.FileSystem.from_uri(spec)
            except (pa.ArrowException, ValueError, OSError) as e:
                raise NotAStoreError(f"data location {self.uri} cannot be opened by pyarrow: "
                                     f"{e}") from e
            self.base, self.local = base.rstrip("/"), False
            scheme = urllib.parse.urlsplit(spec).scheme
            self._shown = f"{scheme}://{self.base}"
        else:
            path = urllib.parse.urlsplit(spec).path if spec.startswith("file://") else spec
            self.base = self.uri = self._shown = os.path.abspath(path)
            self.fs, self.local = None, True

    def __repr__(self):
        return f"DataLocation({self.uri!r})"

    def __eq__(self, other):
        return isinstance(other, DataLocation) and (self.local, self.base) == (other.local,
                                                                               other.base)

    def __hash__(self):
        return hash((self.local, self.base))

    def path(self, rel):
        """The path of `rel` as os (local) or the filesystem (remote) takes it."""
        if self.local:
            return os.path.join(self.base, *rel.split("/"))
        return f"{self.base}/{rel}"

    def show(self, rel=None):
        """`rel` as a person reads it in a message: a local path or scheme://bucket/key."""
        if rel is None:
            return self._shown
        return self.path(rel) if self.local else f"{self._shown}/{rel}"

    # -- writing ------------------------------------------------------------------------------

    def write_new(self, rel, data):
        """Writes the bytes of a new file durably; on failure nothing is left behind."""
        if self.local:
            write_durably(self.path(rel), data)
            return
        with self.new_file(rel) as out:
            out.write(data)

    @contextlib.contextmanager
    def new_file(self, rel):
        """Yields a binary sink (a HashingWriter) for a new file at `rel`. On a clean exit the
        file is in place (local: fsynced and renamed; remote: the upload completed); on an
        error nothing is left."""
        if self.local:
            with durable_file(self.path(rel)) as f:
                yield HashingWriter(f)
            return
        target = self.path(rel)
        try:
            with self.fs.open_output_stream(target) as stream:
                yield HashingWriter(stream)
        except BaseException:
            self._remove_quietly(target)
            raise

    def remove(self, rel):
        """Deletes a file; one already gone is fine."""
        try:
            if self.local:
                os.remove(self.path(rel))
            else:
                self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    def _remove_quietly(self, target):
        with contextlib.suppress(OSError):
            self.fs.delete_file(target)

    def make_root(self):
        """Makes sure new files can be written here (fails early, at store creation)."""
        probe = f"data/.probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            if self.local:
                os.makedirs(self.path("data"), exist_ok=True)
            self.write_new(probe, b"ok")
            self.remove(probe)
        except OSError as e:
            raise NotAStoreError(f"cannot write data files at {self.show()}: "
                                 f"{e.strerror or e}") from e

    # -- reading ------------------------------------------------------------------------------

    def read_bytes(self, rel):
        with self.open_input(rel) as f:
            return f.read()

    def open_input(self, rel):
        """A binary stream of the file (a context manager)."""
        if self.local:
            return open(self.path(rel), "rb")
        return self.fs.open_input_stream(self.path(rel))

    def exists(self, rel):
        if self.local:
            return os.path.exists(self.path(rel))
        import pyarrow.fs as pafs
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File

    def parquet_file(self, rel):
        import pyarrow.parquet as pq
        if self.local:
            return pq.ParquetFile(self.path(rel))
        return pq.ParquetFile(self.fs.open_input_file(self.path(rel)))

    def dataset(self, rels, schema):
        import pyarrow.dataset as ds
        return ds.dataset([self.path(r) for r in rels], schema=schema, format="parquet",
                          filesystem=self.fs)

    def files(self, under="data"):
        """(rel, name, mtime) of every file below `under`; mtime None if unknown."""
        if self.local:
            top = self.path(under)
            for folder, _dirs, names in os.walk(top):
                for name in names:
                    full = os.path.join(folder, name)
                    try:
                        mtime = os.path.getmtime(full)
                    except OSError:
                        continue   # gone meanwhile
                    yield os.path.relpath(full, self.base).replace(os.sep, "/"), name, mtime
            return
        import pyarrow.fs as pafs
        selector = pafs.FileSelector(self.path(under), recursive=True, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            rel = info.path[len(self.base) + 1:]
            yield rel, info.base_name, info.mtime.timestamp() if info.mtime else None


class HashingWriter:
    """A binary sink that forwards writes and keeps their sha256 and size (so a file written
    to an object store needs no second read to be registered)."""

    def __init__(self, raw):
        self.raw, self.size, self._digest = raw, 0, hashlib.sha256()
        self.closed = False

    def write(self, data):
        view = memoryview(data)
        self._digest.update(view)
        self.size += view.nbytes
        self.raw.write(view)
        return view.nbytes

    def tell(self):
        return self.size

    def flush(self):
        pass

    def close(self):   # the owner (new_file) closes the file; pyarrow may call this first
        self.closed = True

    def writable(self):
        return True

    def sha256(self):
        return self._digest.hexdigest()


__all__ = ["DataLocation", "HashingWriter", "is_uri", "strip_credentials"]
