"""The tail's record decoding: schema/tfevents_decode.py, with the recorder's summary decoder
(recorder/summaries.py: TF's protos, as the TF1 hooks decode). `import-tfevents` uses the
same module with the TF-free decoder (schema/summary_decode.py)."""

from tfblackbox.schema import tfevents_decode as _shared
from tfblackbox.schema.tfevents_decode import (MIN_CUT, add_unframed, decode_record,
                                               decode_records)

from ..summaries import decode_summary

_fast, _decoded, _cuts = _shared._fast, _shared._decoded, _shared._cuts
__all__ = ["FileSource", "MIN_CUT", "add_unframed", "decode_record", "decode_records"]


class FileSource(_shared.FileSource):
    decode = staticmethod(decode_summary)
