"""Alembic environment of a store's catalog. It runs on the connection schema/migrate.py
hands in (never an alembic.ini), so a migration sees the store it upgrades:
`config.attributes["store_root"]` is the store directory (for data-file rewrites) and
`config.attributes["after_commit"]` a list of callables to run once the upgrade committed."""

from alembic import context

from tfblackbox.schema.catalog import Base

connection = context.config.attributes["connection"]
# transactional_ddl: SQLite can roll DDL back too (the driver's own BEGIN is off, see
# catalog.py), so a whole upgrade is one transaction on every backend
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite", transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
