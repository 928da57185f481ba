"""Alembic environment of a store's catalog. It runs on the connection schema/store/migrate.py
hands in (never an alembic.ini), so a migration sees the store it upgrades:
`config.attributes["store_data"]` is its DataLocation, `["prepared"][revision]` what the
revision's `prepare()` did before the transaction, `["files"]` the upgrade's new data files."""

from alembic import context

from tfblackbox.schema.store.catalog import STORE_LOCK_KEY, Base

connection = context.config.attributes["connection"]
# transactional_ddl: SQLite can roll DDL back too (the driver's own BEGIN is off, see
# catalog.py), so a whole upgrade is one transaction on every backend
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite", transactional_ddl=True)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # processes opening an old store at once: one upgrades, the others then find it done
        # (alembic reads the current revision after this lock)
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({STORE_LOCK_KEY})")
    context.run_migrations()
