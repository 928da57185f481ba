"""`tfblackbox artifacts [--run ID] [--json]`: the artifact versions of a store (a reader);
`tfblackbox artifacts get NAME:vN [--run ID] --out DIR`: one version's files written back byte
for byte (each checked against its sha256 while it is copied, written under a temporary name
and renamed into place). NAME:alias takes the newest version bearing the alias, NAME alone
the newest version."""

import datetime
import hashlib
import os

from .exits import EXIT_OK, print_json

# the store's modules are imported by the functions that use them, not when the parser is
# built: `replay --jobs N` starts its workers' fork server before (cli/main.py)

COPY_BLOCK = 8 << 20


def add_parser(sub, store_arg):
    p = sub.add_parser("artifacts", help="list artifact versions (checkpoints, files); "
                                         "`artifacts get NAME:vN --out DIR` writes one back")
    p.add_argument("action", nargs="?", choices=["get"], help="get: write a version's files")
    p.add_argument("ref", nargs="?", metavar="NAME:vN",
                   help="the version to get: NAME:vN, NAME:alias or NAME (the newest)")
    store_arg(p)
    p.add_argument("--run", dest="run_id", metavar="ID", help="only this run's artifacts")
    p.add_argument("--out", metavar="DIR", help="for get: a new or empty directory")
    p.add_argument("--json", action="store_true")


def main(store_path, action=None, ref=None, run_id=None, out=None, as_json=False):
    from tfblackbox.schema import BlackboxError, Store
    store = Store.open(store_path)   # a reader: changes nothing
    if run_id is not None:
        store.run(run_id)   # unknown run: an error naming the runs
    if action is None:
        if ref is not None:
            raise BlackboxError(f"unexpected argument {ref!r}; did you mean "
                                f"`tfblackbox artifacts get {ref} --out DIR`?")
        return _list(store, run_id, as_json)
    if ref is None or out is None:
        raise BlackboxError("artifacts get needs a version and a directory: "
                            "`tfblackbox artifacts get NAME:vN --out DIR`")
    return _get(store, ref, run_id, out, as_json)


def _list(store, run_id, as_json):
    from .store_tools import human_size
    versions = store.artifacts(run_id)
    if as_json:
        print_json([_as_dict(a) for a in versions])
        return EXIT_OK
    if not versions:
        print(f"no artifacts in {store.root}" + (f" for run {run_id}" if run_id else ""))
        return EXIT_OK
    rows = [("RUN", "ARTIFACT", "TYPE", "ALIASES", "STEP", "FILES", "SIZE", "LOGGED")]
    for a in versions:
        rows.append((a.run_id, f"{a.name}:v{a.version}", a.type, ",".join(a.aliases) or "-",
                     "-" if a.step is None else str(a.step), str(len(a.files)), human_size(a.size),
                     datetime.datetime.fromtimestamp(a.wall_time).strftime("%Y-%m-%d %H:%M:%S")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return EXIT_OK


def _as_dict(a):
    return {"version_id": a.version_id, "run_id": a.run_id, "name": a.name,
            "version": a.version, "ref": f"{a.name}:v{a.version}", "type": a.type,
            "aliases": list(a.aliases), "metadata": a.metadata, "step": a.step,
            "wall_time": a.wall_time, "size": a.size,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in a.files]}


def resolve(store, ref, run_id=None):
    """The one ArtifactVersion `ref` (NAME:vN, NAME:alias, NAME) names; a clear error if none
    or if runs differ."""
    from tfblackbox.schema import BlackboxError
    found = store.artifacts(run_id, ref)
    name = ref.rsplit(":", 1)[0] if ":" in ref else ref
    if not found:
        known = sorted({f"{a.name}:v{a.version}" for a in store.artifacts(run_id)})
        where = f" of run {run_id}" if run_id else ""
        raise BlackboxError(f"no artifact version {ref!r}{where} in store {store.root} "
                            f"(versions here: {', '.join(known[:20]) or 'none'})")
    runs = sorted({a.run_id for a in found})
    if len(runs) > 1:
        raise BlackboxError(f"artifact {name!r} is in several runs ({', '.join(runs)}); "
                            f"pass --run ID")
    return found[-1]


def _get(store, ref, run_id, out, as_json):
    from tfblackbox.schema import BlackboxError
    from tfblackbox.schema.errors import StoreDamageError

    from .store_tools import human_size
    version = resolve(store, ref, run_id)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise BlackboxError(f"--out {out} exists and is not an empty directory; expected a "
                            f"new or empty directory")
    os.makedirs(out, exist_ok=True)
    for f in version.files:
        target = os.path.join(out, *f.path.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.tmp")
        digest = hashlib.sha256()
        with store.open_artifact_file(f.sha256) as src, open(tmp, "wb") as dst:
            while block := src.read(COPY_BLOCK):
                digest.update(block)
                dst.write(block)
        if digest.hexdigest() != f.sha256:
            os.remove(tmp)
            raise StoreDamageError(f"store {store.root}: the blob of {f.path} in "
                                   f"{version.name}:v{version.version} does not match its "
                                   f"sha256; run `tfblackbox verify --store {store.root}`")
        os.replace(tmp, target)
    if as_json:
        print_json(_as_dict(version) | {"out": os.path.abspath(out)})
    else:
        print(f"{version.name}:v{version.version} ({version.type}, run {version.run_id}): "
              f"{len(version.files)} file(s), {human_size(version.size)} -> {os.path.abspath(out)}")
    return EXIT_OK

