"""recorder.ModelCheckpoint: a drop-in for wandb's WandbModelCheckpoint (Keras 3) that records.

It is Keras' ModelCheckpoint (it saves exactly as Keras does) and records the file at
`filepath` after each save as a version of `run_<run id>_model`, type "model", with the
aliases wandb 0.31's callback gives (wandb/integration/keras/callbacks/model_checkpoint.py):
at every epoch end with save_freq="epoch" ["latest", "epoch_<epoch>"] (epoch counted from 0,
while Keras formats `{epoch}` in the path from 1); every save_freq batches ["latest",
"epoch_<epoch>_batch_<batch>"]. As wandb's, it logs the file at `filepath` whether or not
Keras saved this time (save_best_only without improvement logs the best file again: W&B keeps
it as the same version, the store costs nothing for the same bytes); where wandb would raise
into training (no file at the path yet) this logs a warning.

Keeping the training thread short: the saved file is hard-linked into a staging name in the
store's blob folder, and that is all a save costs it; hashing, chunking, writing the blobs and
registering happen on the artifact thread, which then removes the staging link (the store
never keeps an inode the training shares). Keras rewrites a file in place (zipfile and h5py
open it with truncation), which would change the staged bytes too, so before Keras saves
again to a path we linked (`_should_save_model` said yes) the path is unlinked: Keras writes
a new file, the staging link keeps the old bytes. Where no link can be made (another file
system, an object store), the artifact thread copies the file, and a save to that path waits
for that copy first. A file rewritten in place by something else before the artifact thread
read it is refused (size or mtime changed), never half-recorded.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import keras

from .. import run as run_mod
from ..artifacts import recorder_of

log = logging.getLogger("tfblackbox")


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    def __init__(self, filepath: str, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False,
                 mode: str = "auto", save_freq: str | int = "epoch",
                 initial_value_threshold: float | None = None, run: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(filepath=filepath, monitor=monitor, verbose=verbose,
                         save_best_only=save_best_only, save_weights_only=save_weights_only,
                         mode=mode, save_freq=save_freq,
                         initial_value_threshold=initial_value_threshold, **kwargs)
        self._run = run if run is not None else run_mod.get_or_start_run()
        self._linked: dict[str, tuple[int, int]] = {}   # path -> (dev, inode) we linked
        self.versions: list = []   # PendingVersion of each logged checkpoint

    # -- the wandb callback's hooks -------------------------------------------------------

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._should_save_on_batch(batch):
            self._save_model(epoch=self._current_epoch, batch=batch, logs=logs)
            filepath = self._get_file_path(self._current_epoch, batch, logs or {})
            self._log(filepath, ["latest", f"epoch_{self._current_epoch}_batch_{batch}"])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if self.save_freq == "epoch":
            self._log(self._get_file_path(epoch, None, logs or {}),
                      ["latest", f"epoch_{epoch}"])

    # -- before Keras writes: the linked blob must keep its bytes ---------------------------

    def _should_save_model(self, epoch, batch, logs, filepath):
        save = super()._should_save_model(epoch, batch, logs, filepath)
        if save:
            self._release(filepath)
        return save

    def _release(self, filepath):
        try:
            recorder_of(self._run).wait_for(filepath)
            key = os.path.abspath(filepath)
            linked = self._linked.pop(key, None)
            if linked is not None:
                st = os.stat(filepath)
                if (st.st_dev, st.st_ino) == linked:
                    os.unlink(filepath)   # Keras writes a new file; the blob keeps its bytes
        except FileNotFoundError:
            pass
        except Exception as e:
            log.warning("tfblackbox: ModelCheckpoint: could not prepare %s for the next save: "
                        "%s: %s", filepath, type(e).__name__, e)

    def _log(self, filepath, aliases):
        try:
            if not os.path.exists(filepath):
                log.warning("tfblackbox: ModelCheckpoint: no checkpoint at %s to record "
                            "(training goes on)", filepath)
                return
            pending = recorder_of(self._run).log(filepath, f"run_{self._run.run_id}_model",
                                                 "model", aliases, link=True)
            self.versions.append(pending)
            if os.path.isfile(filepath) and pending.error is None:
                st = os.stat(filepath)
                if st.st_nlink > 1:
                    self._linked[os.path.abspath(filepath)] = (st.st_dev, st.st_ino)
        except Exception as e:   # never into training
            log.warning("tfblackbox: ModelCheckpoint: %s was not recorded: %s: %s", filepath,
                        type(e).__name__, e)


__all__ = ["ModelCheckpoint"]
