"""What DumpHook's ingest read, turned into writer jobs: each partition graph once, the
tensors encoded against earlier dumps of the same watch (tfdbg_v1_codec), and the run rows;
with the counts DumpHook's backlog and disk budget go by."""

from tfblackbox.schema.codecs import tfdbg_v1_codec, tfdbg_v1_rows


class DumpJobs:
    def __init__(self, run, device):
        self.run = run
        self._device = device          # device dir -> real device name (the ingest's)
        self.bytes_recorded = 0        # uncompressed bytes handed to the writer (the budget)
        self.largest_run = 0           # bytes of the largest dumped session.run so far
        self.runs_recorded = 0
        self.runs_dropped = 0          # refused by a full writer queue
        self.tensors_recorded = 0
        self._graphs_seen = set()      # (device, hash) already recorded
        self._encoder = tfdbg_v1_codec.Encoder()   # tensors against earlier dumps (ingest order)
        # times the writer dropped held dump rows, graph rows (counted on its thread): later
        # rows must not be encoded against them, graphs are recorded again
        self._drops, self._drops_seen = [0, 0], [0, 0]
        run.writer.on_drop(self._dropped)

    def record(self, read):
        """One writer job for the runs read: their graphs not recorded yet, tensors (encoded)
        and run rows. Returns whether the writer took it."""
        if not read:
            return True
        if self._drops != self._drops_seen:   # nothing may refer to rows the writer dropped
            drops = list(self._drops)
            self._encoder.forget()
            if drops[1] != self._drops_seen[1]:
                self._graphs_seen.clear()
            self._drops_seen = drops
        # while the writer holds rows it could not store, dumps are key frames: one it drops
        # then takes no later dump with it (their memory is the same; only files grow)
        self._encoder.key_every = 1 if self.run.writer.holding() else tfdbg_v1_codec.KEY_EVERY
        graphs, sizes = [], {}
        for r in read:
            sizes[r["seq"]] = r["nbytes"]
            for item in r["graphs"]:
                key = (item[1].device_dir, item[1].graph_hash)
                if key not in self._graphs_seen:
                    self._graphs_seen.add(key)      # given back if the job is not queued
                    graphs.append((r["step"], item))
                    sizes[r["seq"]] += len(item[3])
        try:
            with_tensors = [(r["step"], r["run_key"], r["tensors"]) for r in read
                            if r["tensors"]]
            tensors = (tfdbg_v1_rows.debug_tensor_runs(with_tensors, self._device, self._encoder)
                       if with_tensors else None)
            queued = self._submit(graphs, tensors, [r["run_row"] for r in read], read, sizes)
        except BaseException:
            queued = None
            raise
        finally:
            if not queued:
                self._encoder.forget()          # later rows must not be encoded against these
                for _step, (_device, g, _w, _gd) in graphs:
                    self._graphs_seen.discard((g.device_dir, g.graph_hash))
        return queued

    def _dropped(self, tables):   # the writer's thread
        if tables & {"tfdbg_v1_tensors", "tfdbg_v1_runs", "tfdbg_v1_graphs"}:
            self._drops[1] += "tfdbg_v1_graphs" in tables
            self._drops[0] += 1

    def _submit(self, graphs, tensors, run_rows, read, sizes):
        nbytes = sum(sizes.values())

        def job(buffers):
            for step, (device, g, wall, graph_def) in graphs:
                buffers.add("tfdbg_v1_graphs", **tfdbg_v1_rows.debug_graph_row(
                    step, device, g.graph_hash, g.timestamp, wall, graph_def))
            if tensors is not None:
                buffers.add_table("tfdbg_v1_tensors", tensors)
            for run_row in run_rows:
                buffers.add("tfdbg_v1_runs", **run_row)

        # the ingest is not the training thread: it waits for the writer rather than drop
        # dumped steps (a backlog makes DumpHook skip steps, counted, instead)
        if self.run.submit(job, nbytes, block=True):
            self.bytes_recorded += nbytes
            self.largest_run = max([self.largest_run] + list(sizes.values()))
            self.runs_recorded += len(read)
            self.tensors_recorded += sum(len(r["tensors"]) for r in read)
            return True
        self.runs_dropped += len(read)
        return False
