"""TensorBoard logdirs out of the store and into it, without TensorFlow: `replay --to
tensorboard` (export.py: cursor and files; mirror.py: captured event files byte for byte;
generate.py + events.py: Events for rows that came from no event file) and `tfblackbox
import-tfevents` (import_logdir.py)."""
