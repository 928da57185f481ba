"""Looking at a catalog's layout, and building one by the alembic revisions alone (the
migration tests, on SQLite and PostgreSQL)."""

import sqlalchemy as sa


def catalog_layout(url):
    """Every table's columns, indexes, foreign keys, unique constraints and primary key."""
    engine = sa.create_engine(url)
    try:
        i = sa.inspect(engine)
        return {t: ([(c["name"], str(c["type"]), c["nullable"]) for c in i.get_columns(t)],
                    sorted((x["name"], tuple(x["column_names"]), bool(x["unique"]))
                           for x in i.get_indexes(t)),
                    sorted((tuple(f["constrained_columns"]), f["referred_table"],
                            tuple(f["referred_columns"])) for f in i.get_foreign_keys(t)),
                    sorted((u["name"], tuple(u["column_names"]))
                           for u in i.get_unique_constraints(t)),
                    i.get_pk_constraint(t)["constrained_columns"])
                for t in i.get_table_names()}
    finally:
        engine.dispose()


def upgrade_empty_catalog(url, revision="head"):
    """Runs the alembic revisions up to `revision` on an empty database."""
    from alembic import command
    from alembic.config import Config

    from tfblackbox.schema.store import migrate
    from tfblackbox.schema.store.catalog import Catalog
    catalog = Catalog(url)
    cfg = Config()
    cfg.set_main_option("script_location", migrate.SCRIPTS)
    try:
        with catalog.engine.connect() as conn:
            cfg.attributes.update(connection=conn, prepared={}, files=None)
            command.upgrade(cfg, revision)
            conn.commit()
    finally:
        catalog.dispose()


def newest_format_sqlite(con):
    """(format_version, alembic revision) of a SQLite catalog, and what the newest are."""
    from tfblackbox.schema import FORMAT_VERSION
    from tfblackbox.schema.store.migrate import REVISIONS
    found = (con.execute("SELECT value FROM meta WHERE key='format_version'").fetchone(),
             con.execute("SELECT version_num FROM alembic_version").fetchone())
    return found, ((str(FORMAT_VERSION),), (REVISIONS[FORMAT_VERSION],))


def newest_format_postgres(postgres, db):
    """The same for a PostgreSQL database of the tests' server."""
    from tfblackbox.schema import FORMAT_VERSION
    from tfblackbox.schema.store.migrate import REVISIONS
    found = (postgres.sql("SELECT value FROM meta WHERE key = 'format_version'", db),
             postgres.sql("SELECT version_num FROM alembic_version", db))
    return found, ([(str(FORMAT_VERSION),)], [(REVISIONS[FORMAT_VERSION],)])
