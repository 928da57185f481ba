"""TF2 capture: what Keras and tf.summary / tf.function training write."""
