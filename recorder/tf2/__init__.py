"""tfblackbox.recorder.tf2: TensorFlow 2 / Keras 3 capture: the Keras callback
(metrics_logger.py), tf.summary capture (tensorboard_patch.py, tfevents_tail.py; records
decoded by schema/codecs/tfevents_decode.py) and tfdbg v2 (tfdbg_v2.py, tfdbg_v2_tail.py,
staging.py); both captures configure the one record-file tail (record_tail.py). These
import TensorFlow; recorder.init/log/finish do not."""
