"""One error family: every exception class the package defines is a BlackboxError, so a caller
can catch tfblackbox's failures with one except clause (schema/errors.py)."""

import importlib
import inspect
import pkgutil

import tfblackbox.recorder
import tfblackbox.replay
import tfblackbox.schema
from tfblackbox.schema.errors import BlackboxError


def _modules():
    for package in (tfblackbox.schema, tfblackbox.replay, tfblackbox.recorder):
        yield package
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if ".migrations." in info.name:   # alembic revision scripts: loaded by alembic
                continue
            yield importlib.import_module(info.name)


def test_every_exception_the_package_defines_is_in_the_family():
    defined = {}
    for module in _modules():
        for name, cls in vars(module).items():
            if (inspect.isclass(cls) and issubclass(cls, BaseException)
                    and cls.__module__ == module.__name__):
                defined[f"{module.__name__}.{name}"] = cls
    assert len(defined) >= 15, sorted(defined)          # the walk found the package's errors
    # private ones (`_Raced`) are control flow that never leaves their module
    outside = sorted(n for n, c in defined.items() if not issubclass(c, BlackboxError)
                     and not n.rsplit(".", 1)[1].startswith("_"))
    assert outside == []
