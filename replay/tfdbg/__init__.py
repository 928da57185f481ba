"""tfdbg dumps out of the store and into it (no TensorFlow).

`replay --to debug-dump` (debug_dump.py): rebuild_v1.py writes the DebugDumpDir layout of
DumpHook's and imported v1 dumps, rebuild_v2.py the dump roots of tfdbg v2 captures for
DebugDataReader. `tfblackbox import-dumps` (import_dumps.py): import_v1.py archives a
DumpingDebugHook session root, import_v2.py an enable_dump_debug_info dump root.
summary_v2.py is what `tfblackbox show` says about a v2 capture."""
