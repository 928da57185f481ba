"""tfdbg dumps out of the store (no TensorFlow).

`replay --to debug-dump` (debug_dump.py): rebuild_v1.py writes the DebugDumpDir layout of
DumpHook's and imported v1 dumps, rebuild_v2.py the dump roots of tfdbg v2 captures for
DebugDataReader. The way in, `tfblackbox import-dumps`, is ingest/tfdbg.py.
summary_v2.py is what `tfblackbox show` says about a v2 capture."""
