"""The store's engine: catalog, opening, data location, segments, maintenance, merge, migrations."""
