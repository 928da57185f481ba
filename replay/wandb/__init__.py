"""`replay --to wandb`: push.py (chunks, cursors, the entry point), rows.py (stored rows ->
one history row per step), media.py (rows -> W&B data types), offline_dir.py (the
--wandb-dir: lock, staging, all-or-nothing publishing). No TensorFlow anywhere here."""
