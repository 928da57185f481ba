"""tfblackbox.recorder.tf2: TensorFlow 2 / Keras 3 capture: the Keras callback
(metrics_logger.py) and tf.summary capture (tensorboard_patch.py, tfevents_tail.py,
tfevents_decode.py). These import TensorFlow; recorder.init/log/finish do not."""
