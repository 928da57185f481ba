"""TensorBoard logdirs out of the store, without TensorFlow: `replay --to tensorboard`
(export.py: cursor and files; mirror.py: captured event files byte for byte; generate.py +
events.py: Events for rows that came from no event file). The way in, `tfblackbox
import-tfevents`, is ingest/tensorboard.py."""
