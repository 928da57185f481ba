"""Store format versions, by alembic (schema/store/migrations/).

A new catalog is created from the models and stamped with the newest revision. Opening an
older store upgrades it in place, after a copy of a SQLite catalog is kept next to it
(`catalog.sqlite.format<N>-backup-<time>`; a server catalog's upgrade is one transaction, so
it commits whole or not at all); a store of a newer format is refused, naming the version it
needs. `meta.format_version` says the format in plain words for older readers; alembic's own
`alembic_version` table says which revision the catalog is at.

A revision that rewrites data files does that work in its `prepare(catalog, data)` before the
upgrade's transaction begins (no transaction waits on file I/O); its `upgrade()` swaps the
catalog entries, and the files it replaced are deleted after the commit (the new files of an
upgrade that did not commit, or that another process did first, are deleted instead).
"""

import contextlib
import os
import shutil
import time

from ..errors import MigrationError, StoreVersionError

FORMAT_VERSION = 9
# format version -> alembic revision
REVISIONS = {1: "0001", 2: "0002", 3: "0003", 4: "0004", 5: "0005", 6: "0006", 7: "0007",
             8: "0008", 9: "0009"}
VERSION_TABLE = "alembic_version"   # alembic's default, where it looks for the revision
SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def package_version():
    """This tfblackbox's version, for run records, catalogs and refusals."""
    try:
        from importlib.metadata import version
        return version("tfblackbox")
    except Exception:
        return "unknown"


def _script():
    from alembic.script import ScriptDirectory
    return ScriptDirectory(SCRIPTS)


def stamp_newest(connection):
    """Records a catalog created from the current models as being at the newest revision:
    alembic's own version table, made as alembic makes it, without importing alembic (its
    import was half of a new store's creation time: ~0.2 s of a short recorded run)."""
    import sqlalchemy as sa
    table = sa.Table(VERSION_TABLE, sa.MetaData(),
                     sa.Column("version_num", sa.String(32), nullable=False),
                     sa.PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"))
    table.create(connection, checkfirst=True)
    connection.execute(table.delete())
    connection.execute(table.insert().values(version_num=REVISIONS[FORMAT_VERSION]))


def check(root, found):
    """The store's format version as an int; refuses a newer or an unreadable one."""
    try:
        found = int(found)
    except (TypeError, ValueError):
        raise StoreVersionError(
            f"store {root}: catalog format_version {found!r} is not a number; the catalog is "
            f"damaged or was not written by tfblackbox") from None
    if found > FORMAT_VERSION:
        raise StoreVersionError(
            f"store {root} has format version {found}, but tfblackbox {package_version()} reads "
            f"format versions up to {FORMAT_VERSION}: upgrade tfblackbox "
            f"(pip install -U tfblackbox) to read it")
    return found


def upgrade(catalog, root, found, catalog_file=None, data=None):
    """Upgrades an older catalog to FORMAT_VERSION in one transaction, after a backup (of a
    SQLite catalog); returns the backup's path (None: nothing to do, or a server catalog)."""
    if found >= FORMAT_VERSION:
        return None
    from alembic import command
    from alembic.config import Config
    backup = _backup(catalog_file, found)
    files = _Files(data)
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPTS)
    cfg.attributes.update(store_root=root, store_data=data, files=files, prepared={})
    try:
        for rev, module in _pending(found):
            if hasattr(module, "prepare"):
                cfg.attributes["prepared"][rev] = module.prepare(catalog, data, files)
        with catalog.engine.connect() as conn, _foreign_keys_off(conn):
            cfg.attributes["connection"] = conn
            from alembic.runtime.migration import MigrationContext
            current = MigrationContext.configure(conn).get_current_revision()
            # the read began a transaction: alembic would run the upgrade inside it and never
            # commit (closing the connection rolled a format-2 store's upgrade back, silently)
            conn.rollback()
            if current is None:
                with conn.begin():
                    MigrationContext.configure(conn).stamp(_script(), REVISIONS[found])
            with catalog.writing():
                command.upgrade(cfg, REVISIONS[FORMAT_VERSION])
            now = MigrationContext.configure(conn).get_current_revision()
            conn.rollback()
            if now != REVISIONS[FORMAT_VERSION]:
                raise MigrationError(f"the catalog is at revision {now} after the upgrade, "
                                     f"expected {REVISIONS[FORMAT_VERSION]}")
    except Exception as e:
        files.abandon()
        where = f"; the catalog as it was is kept in {backup}" if backup else ""
        raise MigrationError(f"store {root}: upgrading the catalog from format {found} to "
                             f"{FORMAT_VERSION} failed ({type(e).__name__}: {e}); nothing was "
                             f"changed{where}") from e
    files.committed()
    return backup


def _pending(found):
    """(revision, module) of each revision after the store's, oldest first."""
    script = _script()
    revs = list(script.iterate_revisions(REVISIONS[FORMAT_VERSION], REVISIONS[found]))
    return [(r.revision, r.module) for r in reversed(revs)]


class _Files:
    """Data files an upgrade writes (`new`) and replaces (`used(new, old)` once its catalog
    entry points at the new one): after the commit the replaced files go, and new files no
    committed entry points at; after a failure every new file goes."""

    def __init__(self, data):
        self.data, self.new, self.replaced = data, [], {}

    def write(self, rel, blob):
        self.data.write_new(rel, blob)
        self.new.append(rel)

    def used(self, new_rel, old_rel):
        self.replaced[new_rel] = old_rel

    def abandon(self):
        for rel in self.new:
            with contextlib.suppress(OSError):
                self.data.remove(rel)

    def committed(self):
        for rel in self.new:
            with contextlib.suppress(OSError):
                self.data.remove(self.replaced[rel] if rel in self.replaced else rel)


def _backup(catalog_file, found):
    if not catalog_file or not os.path.exists(catalog_file):
        return None
    backup = f"{catalog_file}.format{found}-backup-{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.copy2(catalog_file, backup)
    return backup


@contextlib.contextmanager
def _foreign_keys_off(conn):
    """SQLite rebuilds a table to add a constraint (batch mode); the rows that refer to it
    must not be checked halfway. The pragma only works outside a transaction."""
    raw = conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
    if raw is not None:
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=ON")
