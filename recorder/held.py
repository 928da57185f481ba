"""Rows the recorder's writer holds that are not in the store yet, and which go first when
they are too many.

A write that fails (a full disk) leaves its rows here, per table as pieces (pa.Table) in
arrival order, and the writer tries them again at its next flush: the metric tables first,
then media, then raw records and dumps (schema.tables.TIERS), each table oldest piece first,
a bulk table in segments of at most CHUNK_BYTES so that part of it fits where all of it would
not.

The memory they take is bounded (the writer's `max_unwritten_bytes`). Past it `shed` drops
pieces: the highest drop tier first (dumps and raw records, then media, metrics last), the
oldest piece first within a tier, so what stays is the latest rows, as in a flight
recorder's ring, and what is written when space returns joins up with what comes after. A
dumped step goes whole, with the rows encoded against it (schema/codecs/tfdbg_v1_codec.py: a
delta needs its chain's earlier dumps): every held tfdbg_v1_tensors row of a chain that lost a
row, the tfdbg_v1_tensors and tfdbg_v1_runs rows of every step that lost a tensor, and rows of such
chains and steps that arrive later, until the dump capture starts new chains (it is told
through the writer's drop listeners). Every dropped row is counted per table and reason, with
its bytes and steps (`lost`), for the catalog's `losses`.
"""

import pyarrow as pa
import pyarrow.compute as pc

from tfblackbox.schema.errors import BlackboxError
from tfblackbox.schema.tables import METRICS, TIERS, drop_tier, schema_of

CHUNK_BYTES = 8 << 20      # a bulk table's held rows are written in segments of at most this
# Bulk tables are not written into the last 1% of the disk (at least 4 MiB, at most 256 MiB):
# dumps arriving faster than space frees would otherwise fill it to the last byte, and the
# metrics and the catalog's writes would find none.
HEADROOM_FRACTION, HEADROOM_MIN, HEADROOM_MAX = 0.01, 4 << 20, 256 << 20
# At the writer's close the metrics are written: bulk rows may use all but the last MiB (the
# catalog's last writes; the store's reserve file is there for them too). Those are the last
# rows before the end, the ones a post-mortem looks at first.
FINAL_HEADROOM = 1 << 20
_ORDER = {name: i for i, name in enumerate(TIERS)}
_DUMPS = ("tfdbg_v1_tensors", "tfdbg_v1_runs")


class NoRoom(OSError, BlackboxError):
    """A bulk segment not written: the disk's last headroom is left to the metrics. `room`:
    the bytes it could have taken, `size`: its bytes."""

    def __init__(self, message, room, size):
        super().__init__(message)
        self.room, self.size = room, size


def check_room(store, encoded, final=False):
    """Raises NoRoom when writing segment `encoded` (segments.Encoded) of a bulk table would
    leave less than the headroom free on the store's disk (nothing to check on an object
    store with a server catalog)."""
    space = store.free_space()
    if space is None:
        return
    free, size = space
    headroom = FINAL_HEADROOM if final else min(HEADROOM_MAX, max(
        HEADROOM_MIN, int(size * HEADROOM_FRACTION)))
    if free - len(encoded.data) < headroom:
        raise NoRoom(f"disk nearly full ({free} bytes free, {len(encoded.data)} to write): "
                     f"bulk tables leave the last {headroom} bytes to the metrics",
                     free - headroom, len(encoded.data))


def write_order(name):
    """Sort key of the tables a flush writes: by tier (metrics first), then as TIERS lists."""
    return TIERS[name], _ORDER[name]


class Held:
    def __init__(self):
        self._pieces = {}        # table -> [[arrival, pa.Table]], oldest first
        self._arrival = 0
        self.nbytes = 0
        self.lost = {}           # (table, reason) -> [rows, bytes, first step, last step]
        self._cut_runs, self._cut_chains = set(), set()   # dumped steps and chains dropped

    def __bool__(self):
        return bool(self._pieces)

    def __contains__(self, name):
        return name in self._pieces

    def rows(self):
        return sum(t.num_rows for pieces in list(self._pieces.values()) for _a, t in pieces)

    def peek(self, name):
        """All held rows of `name` as one table (diagnostics, tests)."""
        return pa.concat_tables([t for _a, t in self._pieces.get(name, ())] or [
            schema_of(name).empty_table()])

    def rows_of(self, name):
        return sum(t.num_rows for _a, t in self._pieces.get(name, ()))

    def tables(self):
        """The tables held, in the order they are written: metrics first."""
        return sorted(self._pieces, key=write_order)

    @staticmethod
    def is_bulk(name):
        """Bulk rows are written in chunks, never into the headroom, and not after a failed
        write of the flush; the metrics and the small rows others refer to (DROPPED_LAST)
        are always tried."""
        return drop_tier(name) != METRICS

    def add(self, name, table):
        """Keeps rows not written (less those `admit` refuses)."""
        table = self.admit(name, table)
        if table.num_rows == 0:
            return
        self._arrival += 1
        self._pieces.setdefault(name, []).append([self._arrival, table])
        self.nbytes += table.nbytes

    def admit(self, name, table):
        """`table` without the rows of dropped dumped steps and chains (counted as lost, and
        what they belong to cut in turn, held rows included): a row encoded against a
        dropped one cannot be decoded, a step without some of its tensors is not the step."""
        if name not in _DUMPS or not (self._cut_runs or self._cut_chains):
            return table
        cut = False
        while table.num_rows:
            gone = self._gone(name, table)
            if not pc.any(gone).as_py():
                break
            lost, table = table.filter(gone), table.filter(pc.invert(gone))
            self._lose(name, lost, "memory")
            cut |= self._cut(lost)
        if cut:
            self._sweep()
        return table

    def chunk(self, name, limit=CHUNK_BYTES):
        """(pieces, table): the oldest held rows of `name` to write as one segment; all of a
        metric table, at most `limit` bytes of a bulk one (at least one piece). A dumped
        step's tfdbg_v1_runs row, which makes its tensors visible, waits while any of its
        tensors is held: (0, None) when all do."""
        if name == "tfdbg_v1_runs" and "tfdbg_v1_tensors" in self._pieces:
            return self._ready_runs()
        pieces, size, n = self._pieces[name], 0, 0
        for _a, t in pieces:
            if n and self.is_bulk(name) and size + t.nbytes > limit:
                break
            size += t.nbytes
            n += 1
        return n, pa.concat_tables([t for _a, t in pieces[:n]])

    def _ready_runs(self):
        """tfdbg_v1_runs rows whose step has no tensor held, as one piece in front of the
        others (which keep the oldest arrival): (1, them), or (0, None)."""
        pieces = self._pieces["tfdbg_v1_runs"]
        table = pa.concat_tables([t for _a, t in pieces])
        waiting = pa.array(list(set().union(*(pc.unique(t["run_key"]).to_pylist()
                                              for _a, t in self._pieces["tfdbg_v1_tensors"]))),
                           pa.string())
        wait = pc.fill_null(pc.is_in(table["run_key"], value_set=waiting), False)
        ready, rest = table.filter(pc.invert(wait)), table.filter(wait)
        self.nbytes += ready.nbytes + rest.nbytes - sum(t.nbytes for _a, t in pieces)
        self._pieces["tfdbg_v1_runs"] = [[pieces[0][0], t] for t in (ready, rest) if t.num_rows]
        return (1, ready) if ready.num_rows else (0, None)

    def written(self, name, n):
        """The oldest n pieces of `name` are in the store."""
        pieces = self._pieces[name]
        self.nbytes -= sum(t.nbytes for _a, t in pieces[:n])
        del pieces[:n]
        if not pieces:
            del self._pieces[name]

    def shed(self, bound):
        """Drops pieces until at most `bound` bytes are held; returns the tables that lost
        rows."""
        dropped = set()
        while self.nbytes > bound and self._pieces:
            name = max(self._pieces, key=lambda n: (drop_tier(n), -self._pieces[n][0][0]))
            piece = self._pieces[name][0]
            table, excess = piece[1], self.nbytes - bound
            if name not in _DUMPS and table.num_rows > 1 and table.nbytes > excess:
                # the oldest rows of a big piece (metrics come in one piece a flush), the
                # others copied so that the memory is freed
                k = -(-table.num_rows * excess // table.nbytes)
                piece[1] = table.take(pa.array(range(k, table.num_rows)))
                self.nbytes += piece[1].nbytes - table.nbytes
                table = table.slice(0, k)
            else:
                self._pieces[name].pop(0)
                if not self._pieces[name]:
                    del self._pieces[name]
                self.nbytes -= table.nbytes
            self._lose(name, table, "memory")
            dropped.add(name)
            if name in _DUMPS:
                self._cut(table)
                dropped |= self._sweep()
        return dropped

    def give_up(self, reason="finish"):
        """Counts every held row as lost (the attempt ends) and forgets them."""
        for name in list(self._pieces):
            for _a, table in self._pieces.pop(name):
                self._lose(name, table, reason)
        self.nbytes = 0

    # -- dumped steps and their chains ----------------------------------------------------------

    def _cut(self, table):
        """Notes the steps (run keys) and chains of dropped dump rows; True if any is new."""
        runs = set(table["run_key"].to_pylist()) - self._cut_runs
        chains = set()
        if "chain_run" in table.column_names:
            chains = {c for c in pc.unique(table["chain_run"]).to_pylist() if c is not None}
            chains -= self._cut_chains
        self._cut_runs |= runs
        self._cut_chains |= chains
        return bool(runs or chains)

    def _sweep(self):
        """Drops every held dump row of a cut step or chain, cutting what those rows belong
        to in turn, until nothing more goes; returns the tables that lost rows."""
        dropped, again = set(), True
        while again:
            again = False
            for name in [n for n in _DUMPS if n in self._pieces]:
                for piece in list(self._pieces[name]):
                    table = piece[1]
                    gone = self._gone(name, table)
                    if not pc.any(gone).as_py():
                        continue
                    lost, kept = table.filter(gone), table.filter(pc.invert(gone))
                    self.nbytes -= table.nbytes - kept.nbytes
                    self._lose(name, lost, "memory")
                    dropped.add(name)
                    again |= self._cut(lost)
                    if kept.num_rows:
                        piece[1] = kept
                    else:
                        self._pieces[name].remove(piece)
                if not self._pieces[name]:
                    del self._pieces[name]
        return dropped

    def _gone(self, name, table):
        """Which rows of a dump table belong to a cut step or chain (a boolean array)."""
        gone = pc.is_in(table["run_key"], value_set=pa.array(list(self._cut_runs), pa.string()))
        if name == "tfdbg_v1_tensors":
            gone = pc.or_kleene(gone, pc.is_in(table["chain_run"], value_set=pa.array(
                list(self._cut_chains), pa.string())))
        return pc.fill_null(gone, False)

    def _lose(self, name, table, reason):
        count = self.lost.setdefault((name, reason), [0, 0, None, None])
        count[0] += table.num_rows
        count[1] += table.nbytes
        if table.num_rows:
            mm = pc.min_max(table["step"]).as_py()
            count[2] = mm["min"] if count[2] is None else min(count[2], mm["min"])
            count[3] = mm["max"] if count[3] is None else max(count[3], mm["max"])
