"""What a directory holds, for tests that compare rebuilt dirs with the originals."""

import os


def files_under(root):
    """{path relative to root: bytes} of every file below `root`."""
    files = {}
    for folder, _dirs, names in os.walk(str(root)):
        for n in names:
            p = os.path.join(folder, n)
            with open(p, "rb") as f:
                files[os.path.relpath(p, str(root))] = f.read()
    return files
