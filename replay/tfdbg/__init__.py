"""tfdbg dumps out of the store and into it: `replay --to debug-dump` (rebuild_v1.py: the
DebugDumpDir layout of DumpHook's and imported v1 dumps) and `tfblackbox import-dumps`
(import_v1.py: an existing DumpingDebugHook session root). No TensorFlow."""
