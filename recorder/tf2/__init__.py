"""tfblackbox.recorder.tf2: TensorFlow 2 / Keras 3 capture (callbacks; imports TensorFlow)."""
