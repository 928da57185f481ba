"""Decoders, row builders and restores: foreign records <-> the store's rows."""
