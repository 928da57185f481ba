"""Store format versions, in one place.

Version 1 is the first format. A later format adds `MIGRATIONS[n]`, a function that takes the
catalog from version n-1 to n inside one transaction (and rewrites data files if it must).
"""

from . import catalog as cat
from .errors import StoreVersionError

MIGRATIONS = {}   # {target_version: fn(session, store_root)}


def check_and_migrate(catalog, root, found, package_version):
    """Refuses a store from a newer format; upgrades an older one step by step."""
    try:
        found = int(found)
    except (TypeError, ValueError):
        raise StoreVersionError(
            f"store {root}: catalog format_version {found!r} is not a number; the catalog is "
            f"damaged or was not written by tfblackbox") from None
    if found > cat.FORMAT_VERSION:
        raise StoreVersionError(
            f"store {root} has format version {found}, but tfblackbox {package_version} reads "
            f"format versions up to {cat.FORMAT_VERSION}: upgrade tfblackbox "
            f"(pip install -U tfblackbox) to read it")
    for target in range(found + 1, cat.FORMAT_VERSION + 1):
        with catalog.write() as s:
            MIGRATIONS[target](s, root)
            catalog.set_meta(s, "format_version", target)
    return cat.FORMAT_VERSION
