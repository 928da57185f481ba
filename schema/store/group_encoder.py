"""A segment group encoded while its rows are still being made: an importer's pipeline.

`segments.write_group` encodes a flush's tables one after the other once the flush is due, on
the importer's own thread, so decoding and Parquet encoding never overlap. Here each table has
a thread of its own that encodes the batches handed to it (`add`) row group by row group as
they come (pyarrow encodes and compresses without the GIL), while the caller goes on decoding;
`write` waits for them, writes each table's file from its thread, and registers the files in
one transaction, as write_group does: a group lands whole or not at all.
"""

import concurrent.futures

from . import segments


class GroupEncoder:
    """Per-table background encoders for one segment group of run `run_id`."""

    def __init__(self, data, catalog, run_id, writer_id=None):
        self.data, self.catalog, self.run_id, self.writer_id = data, catalog, run_id, writer_id
        self._threads = {}    # table -> its single-thread executor (a table's batches in order)
        self._encoders = {}   # table -> segments.StreamEncoder
        self._pending = []    # futures of add()ed batches, checked at write()

    def add(self, tables):
        """Hands {name: pa.Table} to the tables' encoder threads and returns at once."""
        for name, table in tables.items():
            if name not in self._threads:
                self._threads[name] = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix=f"tfblackbox-encode-{name}")
                # made on its thread: a ParquetWriter takes a millisecond or two to set up
                self._pending.append(self._threads[name].submit(self._start, name))
            self._pending.append(self._threads[name].submit(self._write, name, table))

    def _start(self, name):
        self._encoders[name] = segments.StreamEncoder(name)

    def _write(self, name, table):
        self._encoders[name].write(table)

    def write(self, also=None):
        """Writes and registers the group; returns its SegmentRecords ([] when empty). On an
        error the files written are removed and it is raised (the group is not registered).
        `also(session)` joins the registering transaction (register_group); with no group to
        register it runs in a transaction of its own."""
        if not self._threads:
            if also is not None:
                self.catalog.transact(also)
            return []
        written = []
        try:
            for f in self._pending:
                f.result()
            files = [self._threads[name].submit(self._write_file, name)
                     for name in self._threads]
            errors = []
            for f in files:
                try:
                    written.append(f.result())
                except Exception as e:   # noqa: BLE001 - the files that did land are removed
                    errors.append(e)
            if errors:
                raise errors[0]
            return segments.register_group(self.catalog, self.run_id, written, self.writer_id,
                                           also)
        except BaseException:
            segments.remove_files(self.data, written)
            raise
        finally:
            self.close()

    def _write_file(self, name):
        return segments.write_file(self.data, self.run_id, name, self._encoders[name].finish(),
                                   self.writer_id)

    def close(self):
        """Stops the threads; what was not written is dropped (the caller's rows stay theirs
        to write again)."""
        for pool in self._threads.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self._threads, self._encoders, self._pending = {}, {}, []
