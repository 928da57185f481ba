"""Foreign file formats every side speaks (no TensorFlow): TFRecord framing (`tfrecord`), the
few Event fields of tfevents files (`tfevents`)."""
