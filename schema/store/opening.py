"""Finding, creating and opening a store: its catalog (a SQLite file in the store directory, or
any SQLAlchemy URL) and its data location (the directory, or any pyarrow filesystem URI,
recorded in the catalog so that readers need only the catalog).

    Store.create("./bbx")                                          SQLite + ./bbx/data
    Store.create("postgresql+psycopg://u@host/db", data="s3://bucket/prefix")
    Store.open("postgresql+psycopg://u@host/db")                   data from the catalog
"""

import contextlib
import os
import time
import typing
import uuid

from . import catalog as cat
from . import migrate
from .data_location import DataLocation
from ..errors import NotAStoreError, StoreVersionError
from ..formats.files import fsync_path, pid_alive

CATALOG_FILE = "catalog.sqlite"
RESERVE_FILE = ".tfblackbox-reserve"
DATA_META_KEY = "data_uri"   # meta row: where the data files are, when not the store directory
CREATING_PREFIX = "." + CATALOG_FILE + ".creating-"
PROBE_PREFIX = ".probe-"
DEFAULT_STORE = "./tfblackbox-store"


def default_store():
    """The store a caller that names none uses: $TFBLACKBOX_STORE, else ./tfblackbox-store."""
    return os.environ.get("TFBLACKBOX_STORE") or DEFAULT_STORE


def split_spec(path, catalog_url=None):
    """(directory or None, catalog URL or None) from what a caller named a store by."""
    path = os.fspath(path) if path is not None else None
    if path is not None and cat.is_url(path):
        if catalog_url is not None and catalog_url != path:
            raise NotAStoreError(f"two catalogs named: {cat.display_url(path)} and "
                                 f"{cat.display_url(catalog_url)}")
        return None, path
    return path, catalog_url


def create(path, catalog_url=None, data=None):
    """Makes the store unless it exists; returns (directory, catalog URL) to open it by."""
    directory, url = split_spec(path, catalog_url)
    if url is None:
        _create_sqlite(directory, data)
        return directory, None
    location = DataLocation(data if data is not None else directory) if (
        data is not None or directory is not None) else None
    catalog = cat.Catalog(url)
    try:
        recorded = _init_server_catalog(catalog, location)
    finally:
        catalog.dispose()
    if location is not None and DataLocation(recorded) != location:
        raise NotAStoreError(f"store {catalog.shown} keeps its data at {recorded}, not at "
                             f"{location.uri}; leave data= out to use it")
    return directory, url


class Opened(typing.NamedTuple):
    """An existing store's catalog, before any upgrade."""
    where: str              # the store directory, or the catalog URL without credentials
    catalog: object         # cat.Catalog: read-only for a reader
    data: DataLocation
    found: int              # its format version
    sqlite_file: str | None
    write_url: str          # the catalog URL a writer (or a replay's cursor) connects by


def open_catalog(path, catalog_url=None, finish_half_made=False, write=False):
    """The catalog of an existing store; refuses what is not a store, and a store of a newer
    format. A reader (`write=False`) gets a catalog the database keeps from writing (SQLite
    `mode=ro`, or `immutable` on read-only media; PostgreSQL READ ONLY sessions) and is
    refused an older format, naming `tfblackbox upgrade`: readers change nothing."""
    directory, url = split_spec(path, catalog_url)
    if directory is not None:
        if not os.path.isdir(directory):
            raise NotAStoreError(f"{directory} is not a tfblackbox store: no such directory")
        if url is None and not os.path.isfile(os.path.join(directory, CATALOG_FILE)):
            raise NotAStoreError(
                f"{directory} is not a tfblackbox store: it has no {CATALOG_FILE} (a store is "
                f"made by recorder.init(store=...) or Store.create)")
    media_ro = url is None and _read_only_media(directory)
    write_url = url or sqlite_url_of(os.path.join(directory, CATALOG_FILE))
    where = os.path.abspath(directory) if directory is not None and url is None else (
        cat.display_url(url))
    immutable = media_ro or (url is None and not write and _wal_without_log(directory, where))
    catalog = cat.Catalog(write_url, read_only=not write, immutable=immutable)
    try:
        found, data = _version_and_data(catalog, where, directory, url, media_ro,
                                        finish_half_made and write)
        if found < migrate.FORMAT_VERSION and (media_ro or not write):
            raise StoreVersionError(_older_format(where, found, media_ro))
    except BaseException:
        catalog.dispose()
        raise
    sqlite_file = os.path.join(directory, CATALOG_FILE) if url is None else None
    return Opened(where, catalog, data, found, sqlite_file, write_url)


def _version_and_data(catalog, where, directory, url, media_ro, finish_half_made):
    """(format version, data location) of an existing catalog; refuses a non-store."""
    try:
        tables = catalog.table_names()
    except Exception as e:
        what = "SQLite catalog" if url is None else "catalog database"
        raise NotAStoreError(f"{where}: {CATALOG_FILE if url is None else 'its catalog'} is "
                             f"not a readable {what}: {e}") from e
    found = catalog.get_meta("format_version") if "meta" in tables else None
    if (found is None and url is None and finish_half_made and not media_ro
            and _never_used(catalog, tables)):
        # tfblackbox <= 0.1 created the tables and the version in two steps: a process
        # killed between them left this; no run was ever recorded, so start it afresh
        _drop_all(catalog)
        init_catalog(catalog)
        tables = catalog.table_names()
        found = catalog.get_meta("format_version")
    if found is None and url is None and not media_ro and _never_used(catalog, tables):
        raise NotAStoreError(f"{where}: its catalog was never finished (a create cut short by "
                             f"tfblackbox 0.1, or an empty file) and holds no run; "
                             f"recorder.init or Store.create on it finishes it")
    if "meta" not in tables and found is None:
        raise NotAStoreError(f"{where} is not a tfblackbox store: its catalog has no meta table")
    found = migrate.check(where, found)
    recorded = catalog.get_meta(DATA_META_KEY)
    if recorded is None and directory is None:
        raise NotAStoreError(f"{where} is not a usable tfblackbox store: its catalog records no "
                             f"data location ({DATA_META_KEY})")
    return found, DataLocation(recorded if recorded is not None else directory)


def _older_format(where, found, media_ro):
    """The refusal of an older store by a reader (or on read-only media): what to run."""
    copy = (" on a writable copy (this store is on read-only media)" if media_ro else "")
    return (f"store {where} has format version {found}; this tfblackbox "
            f"({migrate.package_version()}) reads format {migrate.FORMAT_VERSION}. Readers "
            f"change nothing, so they do not upgrade it: run `tfblackbox upgrade --store "
            f"{where}`{copy} first (it keeps a copy of the catalog as it was)")


def upgrade(path, catalog_url=None):
    """`tfblackbox upgrade`: brings an older store to this format in place, after a copy of a
    SQLite catalog (a server catalog upgrades in one transaction). Idempotent. Returns what
    it did: {"store", "format_before", "format_after", "backup"}."""
    opened = open_catalog(path, catalog_url, write=True)
    try:
        backup = migrate.upgrade(opened.catalog, opened.where, opened.found,
                                 opened.sqlite_file, opened.data)
    finally:
        opened.catalog.dispose()
    return {"store": opened.where, "format_before": opened.found,
            "format_after": max(opened.found, migrate.FORMAT_VERSION),
            "backup": os.path.abspath(backup) if backup else None}


def _wal_without_log(directory, where):
    """A catalog in WAL mode (as tfblackbox 0.1 left it) is read `immutable` when it has no
    log to replay: `mode=ro` would create its -wal and -shm files. One with a log is refused
    (reading it would create or change -shm)."""
    file = os.path.join(directory, CATALOG_FILE)
    try:
        with open(file, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    if len(header) < 20 or header[18] != 2:      # 1: rollback journal, 2: WAL
        return False
    wal = file + "-wal"
    if os.path.exists(wal) and os.path.getsize(wal) > 0:
        raise StoreVersionError(
            f"store {where}: {CATALOG_FILE} is in WAL mode with a log not yet written back "
            f"({CATALOG_FILE}-wal; written by tfblackbox 0.1 or another program), which a "
            f"reader cannot read without changing files: run `tfblackbox upgrade --store "
            f"{where}` first")
    return True


def init_catalog(catalog, data_uri=None):
    """Tables, format version (and where the data is) in one transaction; a catalog another
    process initialised first is left as it is. Returns the recorded data location."""
    from sqlalchemy import inspect

    def init(s):
        catalog.lock_store(s)
        if "meta" not in inspect(s.connection()).get_table_names():
            cat.Base.metadata.create_all(s.connection())
            migrate.stamp_newest(s.connection())
        if s.get(cat.Meta, "format_version") is None:
            catalog.set_meta(s, "format_version", migrate.FORMAT_VERSION)
            catalog.set_meta(s, "created_by", migrate.package_version())
            catalog.set_meta(s, "created_at", time.time())
            if data_uri is not None:
                catalog.set_meta(s, DATA_META_KEY, data_uri)
        row = s.get(cat.Meta, DATA_META_KEY)
        return None if row is None else row.value
    return catalog.transact(init)


def _init_server_catalog(catalog, location):
    tables = catalog.table_names()
    if tables and "meta" not in tables:
        raise NotAStoreError(f"database {catalog.shown} holds tables that are not a tfblackbox "
                             f"catalog ({', '.join(sorted(tables)[:5])}); use an empty database")
    if "meta" in tables:
        recorded = catalog.get_meta(DATA_META_KEY)
        if recorded is not None:
            return recorded
    if location is None:
        raise NotAStoreError(f"a new store at {catalog.shown} needs a data location: pass "
                             f"data= (a directory or a URI such as s3://bucket/prefix)")
    location.make_root()
    recorded = init_catalog(catalog, location.uri)
    if recorded is None:
        raise NotAStoreError(f"store {catalog.shown} exists but records no data location")
    return recorded


# -- a SQLite store directory ------------------------------------------------------------------

def _create_sqlite(path, data=None):
    """Makes the SQLite store at `path` unless its catalog exists. Atomic: the catalog is built
    whole under a temporary name and hard-linked into place, so a process killed at any instant
    leaves either no catalog or a complete one, and processes creating one store at once all
    end up in the one linked first."""
    final = os.path.join(path, CATALOG_FILE)
    if os.path.exists(final):
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotAStoreError(f"cannot create a store at {path}: it is a file, not a directory")
    if os.path.isdir(path):
        foreign = [n for n in os.listdir(path) if not _half_made(path, n)]
        if foreign:
            raise NotAStoreError(
                f"cannot create a store at {path}: the directory is not empty and holds no "
                f"{CATALOG_FILE} (found {sorted(foreign)[0]!r}); choose an empty or new "
                f"directory")
    make_data_dir(path)
    location = DataLocation(data) if data is not None else None
    if location is not None and location != DataLocation(path):
        location.make_root()
    else:
        location = None   # the store directory itself: nothing to record (it may move)
    tmp = f"{os.path.join(path, CREATING_PREFIX)}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        catalog = cat.Catalog(sqlite_url_of(tmp))
        try:
            init_catalog(catalog, location.uri if location is not None else None)
        finally:
            catalog.dispose()
        fsync_path(tmp)
        _link_into_place(tmp, final)
        fsync_path(path)
    except OSError as e:
        raise NotAStoreError(f"cannot create a store at {path}: {e.strerror or e}") from e
    finally:
        for leftover in (tmp, tmp + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)


def _drop_all(catalog):
    from sqlalchemy import MetaData

    def drop(s):
        meta = MetaData()
        meta.reflect(s.connection())
        meta.drop_all(s.connection())
    catalog.transact(drop)


def _never_used(catalog, tables):
    """An empty catalog, or one with our tables but no version and no run in it."""
    if not tables:
        return True
    if not {"meta", "runs"} <= tables:
        return False
    return catalog.read(lambda s: s.scalar(cat.select(cat.RunRow.run_id).limit(1)) is None)


def _half_made(path, name):
    """True for what a create killed midway leaves: an empty data/ tree, and temporary
    catalogs (those of dead processes are removed here)."""
    full = os.path.join(path, name)
    if name == "data" and os.path.isdir(full):   # nothing in it but our writability probe
        return all(f.startswith(PROBE_PREFIX) for _d, _s, files in os.walk(full) for f in files)
    if name == RESERVE_FILE:
        return True
    if name.startswith(CREATING_PREFIX):
        pid = name[len(CREATING_PREFIX):].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.remove(full)
        return True
    return False




def _link_into_place(tmp, final):
    """A hard link never replaces a catalog another process linked first; on a filesystem
    without hard links (FAT), a rename guarded by an existence check."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        return
    except OSError:
        if not os.path.exists(final):
            os.rename(tmp, final)


def make_data_dir(path):
    try:
        os.makedirs(os.path.join(path, "data"), exist_ok=True)
        _probe_writable(os.path.join(path, "data"))
    except OSError as e:
        raise NotAStoreError(f"cannot create a store at {path}: {e.strerror or e}") from e


def _probe_writable(folder):
    probe = os.path.join(folder, f"{PROBE_PREFIX}{os.getpid()}")
    with open(probe, "wb") as f:
        f.write(b"ok")
    os.remove(probe)


def _read_only_media(path):
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def sqlite_url_of(file):
    return "sqlite:///" + os.path.abspath(file)
