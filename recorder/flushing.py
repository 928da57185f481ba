"""How the recorder's writer turns what it buffered and holds into segments (a mixin of
Writer, on its thread): the metric tables first, then media, then raw records and dumps; a
bulk table in chunks that fit, never into the disk's last 1% (held.check_room); after a failed
write no bulk table is tried until the next flush. What it holds for rows not in the store
stays within max_unwritten_bytes: a flush makes room when nothing failed, else held rows are
dropped (held.Held.shed: bulk first, the oldest first), counted for the catalog's `losses`,
logged at ERROR, and the writer's drop listeners told.
"""

import logging
import time

from tfblackbox.schema.store import segments

from .held import CHUNK_BYTES, Held, NoRoom, check_room, write_order

log = logging.getLogger("tfblackbox")

DROP_LOG_SECS = 60.0          # drops are logged when they begin, then at most this often
RETRY_BEFORE_DROP_SECS = 0.25  # held rows about to be dropped are first retried this often


class Flushing:
    def _make_room(self, need):
        """Makes what the writer holds at most max_unwritten_bytes - need: by a flush, else
        (it failed, or writes are failing and one was tried within RETRY_BEFORE_DROP_SECS) by
        dropping held rows."""
        if self.held_bytes() + need <= self.max_unwritten_bytes:
            return
        # a drop cannot be undone: when writes were failing, try again first (space may
        # have come back since), but not more than once a RETRY_BEFORE_DROP_SECS
        if not self._held or time.monotonic() - self._last_write >= RETRY_BEFORE_DROP_SECS:
            self._write()
        if self.held_bytes() + need > self.max_unwritten_bytes:
            self._shed(need)

    def _hold_buffers(self):
        for name, table in self._buffers.take().items():
            self._held.add(name, table)
        self._buffered_bytes = self._column_bytes = self._room = 0   # Arrow weighs more

    def _shed(self, need=0):
        """Drops held rows (held.py: bulk first, the oldest first) until what the writer
        holds is at most max_unwritten_bytes - need; tells the listeners; logs at ERROR."""
        self._hold_buffers()
        for name in list(self._streams):
            _encoder, kept = self._pop_stream(name)
            for table in kept:
                self._held.add(name, table)
        dropped = self._held.shed(max(0, self.max_unwritten_bytes - need))
        if not dropped:
            return
        for fn in self._listeners:
            try:
                fn(dropped)
            except Exception as e:   # a listener's bug must not stop the writer
                log.warning("tfblackbox: writer of run %s: a drop listener failed: %s",
                            self.run_id, e)
        now = time.monotonic()
        if self._drop_logged is None or now - self._drop_logged >= DROP_LOG_SECS:
            self._drop_logged = now
            lost = ", ".join(f"{rows} {table} rows ({nbytes / 2**20:.1f} MiB)" for (
                table, reason), (rows, nbytes, _lo, _hi) in sorted(self.losses().items())
                if reason == "memory")
            log.error("tfblackbox: writer of run %s: the store cannot take the rows it holds "
                      "and they passed max_unwritten_bytes=%d: dropped so far %s (the oldest "
                      "first, metrics last; counted in the catalog, see `tfblackbox show`)",
                      self.run_id, self.max_unwritten_bytes, lost)

    def _stream(self, name, table):
        encoder, kept = self._streams.get(name) or (None, [])
        try:
            if encoder is None:
                encoder = segments.StreamEncoder(name)
            encoder.write(table)
        except Exception as e:   # its rows go the usual way: written at once at the flush
            if name in self._streams:
                self._pop_stream(name)
            for t in kept + [table]:
                self._held.add(name, t)
            log.warning("tfblackbox: writer of run %s: encoding %s rows ahead of the flush "
                        "failed (%s); they are written at the flush", self.run_id, name, e)
            return
        kept.append(table)
        self._streams[name] = (encoder, kept)
        self._kept_bytes += table.nbytes
        self._room = 0   # its encoded bytes are held too: measured again at the next job

    def _pop_stream(self, name):
        encoder, kept = self._streams.pop(name)
        self._kept_bytes -= sum(t.nbytes for t in kept)
        return encoder, kept

    def _write(self, final=False):
        """Turns the buffers into segments and writes what is held, metric tables first;
        returns the exception if any table failed. After a failure no bulk table is tried
        until the next flush, and none is written into the disk's last 1% (`final`, when the
        writer closes and the metrics are written: its last MiB)."""
        self._last_write = time.monotonic()
        self._buffered_bytes = self._column_bytes = self._room = 0
        for name, table in self._buffers.take().items():
            if name in self._streams:
                self._stream(name, self._held.admit(name, table))
            else:
                self._held.add(name, table)
        error, stopped = None, False
        for name in sorted(set(self._held.tables()) | set(self._streams), key=write_order):
            if name in self._streams:   # if it fails, its rows are held: written below
                self._write_stream(name, stopped, final)
            if stopped and Held.is_bulk(name):
                continue
            e = self._write_held(name, final)
            if e is not None:
                error, stopped = error or e, True
                self._fail(e, f"{self._held.rows_of(name)} {name} rows kept in memory, "
                              f"retried at the next flush",
                           key=(name, type(e).__name__, getattr(e, "errno", None)))
        if self.held_bytes() > self.max_unwritten_bytes:   # only what could not be written
            self._shed()
        self._unstored = bool(self._held)
        for note in (self._note_dropped, self._note_losses):
            try:
                note()
            except Exception as e:
                error = error or e
        return error

    def _write_held(self, name, final):
        """Writes the held rows of `name`, oldest first (a bulk table in chunks that fit);
        returns the exception that stopped it, if one did."""
        limit = CHUNK_BYTES
        while name in self._held:
            n, table = self._held.chunk(name, limit)
            if not n:   # what is held waits for other rows
                return None
            try:
                if not Held.is_bulk(name):
                    self.store.write_segment(self.run_id, name, table, self.writer_id)
                else:
                    encoded = segments.Encoded.of(table, name)
                    check_room(self.store, encoded, final)
                    self.store.write_encoded(self.run_id, name, encoded, self.writer_id)
            except NoRoom as e:
                if n == 1 or e.room <= 0:
                    return e
                limit = table.nbytes * e.room // e.size    # fewer of its rows may fit
                continue
            except Exception as e:
                return e
            self._held.written(name, n)
            self.rows_written += table.num_rows
            self.segments_written += 1
        return None

    def _write_stream(self, name, stopped, final):
        encoder, kept = self._pop_stream(name)
        try:
            if not stopped:
                encoded = encoder.finish()
                check_room(self.store, encoded, final)
                self.store.write_encoded(self.run_id, name, encoded, self.writer_id)
                self.rows_written += encoded.rows
                self.segments_written += 1
                return True
        except Exception as e:
            log.warning("tfblackbox: writer of run %s: the %s segment encoded ahead could not "
                        "be written (%s); writing its rows again", self.run_id, name, e)
        for t in kept:
            self._held.add(name, t)
        return False

    def _note_dropped(self):
        if self.dropped_jobs != self._dropped_noted:
            self.store.note_writer(self.writer_id, dropped_rows=self.dropped_jobs)
            self._dropped_noted = self.dropped_jobs

    def _note_losses(self):
        losses = self.losses()
        if losses != self._losses_noted:
            self.store.note_losses(self.run_id, self.writer_id, losses)
            self._losses_noted = losses
