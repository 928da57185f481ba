"""Ways in: `tfblackbox import-tfevents` (tensorboard.py) and `import-dumps` (tfdbg.py, with
tfdbg_v1.py for a DumpingDebugHook session root and tfdbg_v2.py for an enable_dump_debug_info
dump root) bring files written without tfblackbox into a store."""
