"""TFRecord framing and the tfevents wire reader against files TensorFlow wrote itself."""

import os
import struct

import pytest

import tf2_files
from tfblackbox.schema.formats import tfevents, tfrecord


@pytest.fixture(scope="module")
def tf_file(tmp_path_factory):
    """A tfevents file of the TF2 loop (scalars, histograms, images, audio, text, a trace
    graph of ~370 KB, hparams, a pr-curve, a raw Summary), written by TF in a child."""
    logdir = tmp_path_factory.mktemp("tf2") / "logs"
    tf2_files.run_script("loop", logdir)
    [path] = tf2_files.event_files(logdir)
    return path


def test_reader_sees_what_tensorboard_and_tf_see_and_rewrites_the_file_byte_for_byte(tf_file,
                                                                                        tmp_path):
    records = tfrecord.read_records(tf_file)
    assert len(records) > 30
    assert [d for _, d in records] == tf2_files.tensorboard_records(tf_file)
    events = tf2_files.tf_events(tf_file)
    assert [type(e).FromString(d) for (_, d), e in zip(records, events)] == events
    assert len(events) == len(records)
    copy = tmp_path / "copy"
    tfrecord.write_records(copy, [d for _, d in records])
    assert copy.read_bytes() == open(tf_file, "rb").read()
    # offsets are where the records start in the file
    data = open(tf_file, "rb").read()
    assert all(data[off + tfrecord.HEADER:off + tfrecord.HEADER + len(d)] == d
               for off, d in records)


@pytest.mark.parametrize("where", ["header", "data", "footer"])
def test_a_half_written_last_record_is_left_for_later_and_read_once_complete(tf_file, tmp_path,
                                                                            where):
    data = open(tf_file, "rb").read()
    records = tfrecord.read_records(tf_file)
    last_off, last = records[-1]
    cut = {"header": last_off + 5, "data": last_off + tfrecord.HEADER + len(last) // 2,
           "footer": len(data) - 2}[where]
    path = tmp_path / "growing"
    path.write_bytes(data[:cut])
    reader = tfrecord.RecordReader(str(path))
    got = reader.read()
    assert [d for _, d in got] == [d for _, d in records[:-1]]
    assert reader.offset == last_off and reader.partial == cut - last_off
    assert reader.read() == [] and reader.offset == last_off   # nothing new: still waiting
    with open(path, "ab") as f:
        f.write(data[cut:])
    assert reader.read() == [(last_off, last)]
    assert reader.offset == len(data) and reader.partial == 0 and reader.index == len(records)


@pytest.mark.parametrize("field", ["length", "data"])
def test_a_corrupt_record_in_the_middle_raises_naming_file_and_offset(tf_file, tmp_path, field):
    data = bytearray(open(tf_file, "rb").read())
    records = tfrecord.read_records(tf_file)
    off, rec = records[10]
    data[off + (3 if field == "length" else tfrecord.HEADER + len(rec) // 2)] ^= 0x40
    path = tmp_path / "bad"
    path.write_bytes(bytes(data))
    reader = tfrecord.RecordReader(str(path))
    assert [d for _, d in reader.read()] == [d for _, d in records[:10]]   # the good ones first
    with pytest.raises(tfrecord.CorruptRecordError) as err:
        reader.read()
    assert str(path) in str(err.value) and f"offset {off}" in str(err.value)
    assert err.value.offset == off and reader.offset == off


def test_records_larger_than_one_read_and_empty_ones(tmp_path):
    payloads = [b"", os.urandom(3 << 20), b"x" * 100, os.urandom(70_000)]
    path = tmp_path / "big"
    tfrecord.write_records(path, payloads)
    reader = tfrecord.RecordReader(str(path))
    got = []
    while True:
        batch = reader.read(max_bytes=64 << 10)
        if not batch:
            break
        got += [d for _, d in batch]
    assert got == payloads and reader.offset == path.stat().st_size


def test_a_file_that_shrank_is_reported(tf_file, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(open(tf_file, "rb").read())
    reader = tfrecord.RecordReader(str(path))
    reader.read()
    path.write_bytes(b"")
    with pytest.raises(tfrecord.FileShrankError, match="truncated or replaced"):
        reader.read()


def test_masked_crc_matches_tensorflow_framing():
    # the footer TF writes for b"" and the crc32c check value of "123456789" (RFC 3720)
    import google_crc32c
    assert google_crc32c.value(b"123456789") == 0xE3069283
    framed = tfrecord.frame(b"")
    assert framed[:8] == b"\0" * 8 and len(framed) == 16
    assert int.from_bytes(framed[12:], "little") == tfrecord.masked_crc(b"")


def test_event_fields_from_the_wire_agree_with_protobuf(tf_file):
    events = tf2_files.tf_events(tf_file)
    kinds = set()
    for (_, data), ev in zip(tfrecord.read_records(tf_file), events):
        info = tfevents.parse_event(data)
        assert (info.step, info.wall_time) == (ev.step, ev.wall_time)
        assert [v.tag for v in info.values] == [v.tag for v in ev.summary.value]
        assert [v.plugin_name for v in info.values] == [
            v.metadata.plugin_data.plugin_name for v in ev.summary.value]
        for v, pv in zip(info.values, ev.summary.value):
            kinds.add((v.kind, v.plugin_name))
            if v.tensor is not None:
                assert v.tensor.dtype == pv.tensor.dtype
                assert v.tensor.shape == [d.size for d in pv.tensor.tensor_shape.dim]
                assert [data[a:b] for a, b in v.tensor.strings] == list(pv.tensor.string_val)
    assert {("tensor", "scalars"), ("tensor", "histograms"), ("tensor", "images"),
            ("tensor", "audio"), ("tensor", "text"), ("tensor", "graph_run_metadata_graph"),
            ("tensor", "hparams"), ("tensor", "pr_curves"), ("simple_value", "")} <= kinds
    with pytest.raises(tfevents.EventFormatError, match="not a tfevents Event"):
        tfevents.parse_event(b"\x0a\xff\xff")


def test_metadata_is_given_to_values_that_lack_it(tf_file):
    _off, data = tfrecord.read_records(tf_file)[1]   # the first scalar: it has metadata
    info = tfevents.parse_event(data)
    v = info.values[0]
    md = data[v.metadata[0]:v.metadata[1]]
    bare = data[v.start:v.metadata[0] - 2] + data[v.metadata[1]:v.end]   # 0x4a, length, md
    summary = b"\x0a" + bytes([len(bare)]) + bare
    values = tfevents.parse_summary(summary, 0, len(summary))
    assert values[0].metadata is None and values[0].tag == v.tag
    fixed = tfevents.with_metadata(summary, values, lambda _v: md)
    assert tfevents.parse_summary(fixed, 0, len(fixed))[0].plugin_name == "scalars"


class _Collect:
    """Buffers that keep every row as a (table, dict) with numpy arrays made lists."""

    def __init__(self):
        self.rows = []

    def add(self, table, **row):
        self.rows.append((table, {k: v.tolist() if hasattr(v, "tolist") else v
                                  for k, v in row.items()}))

    def add_scalar(self, step, wall_time, tag, value):
        self.add("scalars", step=step, wall_time=wall_time, tag=tag, value=value)


def test_the_wire_fast_path_decodes_as_summaries_py_does(tf_file):
    from tfblackbox.schema.codecs import tfevents_decode as dec
    fast_kinds = set()
    for _off, data in tfrecord.read_records(tf_file):
        ev = tfevents.parse_event(data)
        if not ev.values:
            continue
        src_a, src_b = (dec.FileSource(tf_file, "f", "ns") for _ in range(2))
        a, b = _Collect(), _Collect()
        spans_a, cuts_a = dec._fast(src_a, data, ev, a)
        if spans_a is None:
            continue
        spans_b, cuts_b = dec._decoded(src_b, data, ev, 0, b)
        fast_kinds.add(a.rows[0][0])
        assert a.rows == b.rows and (spans_a, cuts_a) == (spans_b, cuts_b)
        assert a.rows[0][1]["tag"].startswith("ns/")
    assert fast_kinds == {"scalars", "histograms"}


def test_records_decoded_by_their_files_templates_are_decoded_as_parsed(tf_file, tmp_path):
    """After its first value of a tag, a file's records of that tag are decoded from a
    template (the bytes around the value); rows and raw rows must be what parsing gives --
    also for a longer file whose steps grow past one varint byte, and a value that changes
    shape (no template match: parsed)."""
    from tfblackbox.schema.codecs import tfevents_decode as dec
    from tfblackbox.replay.tensorboard import events as ev
    records = [d for _o, d in tfrecord.read_records(tf_file)]
    # a hand-made tail: 300 steps of a float scalar, a double scalar and a histogram tensor
    meta = ev.metadata("scalars", data_class=1)
    for step in range(0, 600, 2):
        value = ev.value("x", ev.tensor(1, [], struct.pack("<f", step / 7)) + meta)
        records.append(ev.event(1e9 + step, step, summary=value))
        records.append(ev.event(1e9 + step, step, summary=ev.double_scalar("y", step / 3)))
        k = 2 if step < 300 else 3
        hist = ev.value("h", ev.tensor(2, [k, 3], struct.pack(f"<{3 * k}d", *range(3 * k))) +
                        ev.metadata("histograms"))
        records.append(ev.event(1e9 + step, step, summary=hist))
    once, fresh = _Collect(), _Collect()
    src = dec.FileSource("f", "ns/f", "ns")
    raw_once = [dec.decode_record(src, i, i, d, once) for i, d in enumerate(records)]
    raw_fresh = []
    for i, d in enumerate(records):   # a new source per record: nothing learned, all parsed
        raw_fresh.append(dec.decode_record(dec.FileSource("f", "ns/f", "ns"), i, i, d, fresh))
    assert len(src.templates) >= 4
    assert once.rows == fresh.rows and raw_once == raw_fresh
