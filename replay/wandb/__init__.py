"""`replay --to wandb`: command.py (the entry point: runs, --jobs,
--follow), push.py (one run's chunk, cursors), rows.py (stored rows -> one history row per
step), media.py (rows -> W&B data types), offline_dir.py (the --wandb-dir: lock, staging,
all-or-nothing publishing). No TensorFlow anywhere here."""
