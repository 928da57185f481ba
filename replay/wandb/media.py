"""Recorded histograms and media rows -> W&B data types (no TensorFlow, no PIL).

Images -> `wandb.Image` (GIF -> `wandb.Video`), histograms -> `wandb.Histogram` rebinned to at
most 512 bins, audio -> `wandb.Audio`, text -> `wandb.Html` (a string) or `wandb.Table` (a string
tensor), pr-curves -> `wandb.Table` (threshold, precision, recall, tp, fp, tn, fn).

Media bytes are written once to a scratch file that wandb then moves into the run's media
folder. Images are built without PIL: the store already has their width and height (or they are
read from the PNG/GIF header), so nothing is decoded.
"""

import html
import itertools
import json
import os
import struct

import numpy as np

MAX_BINS = 512   # wandb.Histogram.MAX_LENGTH
_HUGE = 1e300    # TF's outermost bucket limits are +-DBL_MAX
_EXT = {"image/png": "png", "image/gif": "gif", "image/jpeg": "jpg", "audio/wav": "wav",
        "audio/x-wav": "wav", "audio/mpeg": "mp3", "audio/ogg": "ogg", "audio/flac": "flac"}
_SEQ = itertools.count()


# -- histograms ---------------------------------------------------------------------------------

def histogram_edges(limits, counts, lefts=None, lo=None, hi=None):
    """(counts, edges) with len(edges) == len(counts) + 1, finite and non-decreasing.

    `limits` are right edges as in HistogramProto; the left edge of a bucket is the previous
    right edge, the first one the recorded min. TF's outermost limits are +-DBL_MAX: clamped
    to the recorded min/max. Plugin tensors carry their own left edges (`lefts`)."""
    counts = np.asarray(counts, dtype=np.float64)
    rights = np.asarray(limits, dtype=np.float64)
    if len(counts) == 0:
        return counts, np.asarray([lo or 0.0, hi or 0.0], dtype=np.float64)
    if lefts is not None and len(lefts) == len(counts):
        edges = np.append(np.asarray(lefts, dtype=np.float64), rights[-1])
    else:
        first = lo if lo is not None and np.isfinite(lo) else rights[0]
        edges = np.concatenate([[min(first, rights[0])], rights])
    if hi is not None and np.isfinite(hi) and len(edges) > 1:
        edges[-1] = max(min(edges[-1], hi), edges[-2])   # TF's last limit is DBL_MAX
    bad = ~np.isfinite(edges) | (np.abs(edges) >= _HUGE)
    if bad.any():   # a +-DBL_MAX limit the min/max did not fix: take the neighbouring edge
        good = np.where(~bad)[0]
        if len(good) == 0:
            edges = np.zeros_like(edges)
        else:
            nearest = good[np.clip(np.searchsorted(good, np.arange(len(edges))), 0,
                                   len(good) - 1)]
            edges = np.where(bad, edges[nearest], edges)
    return counts, np.maximum.accumulate(edges)


def rebin(counts, edges, max_bins=MAX_BINS):
    """Merges adjacent buckets in equal groups so that at most max_bins remain (exact sums)."""
    n = len(counts)
    if n <= max_bins:
        return counts, edges
    group = -(-n // max_bins)
    starts = np.arange(0, n, group)
    return np.add.reduceat(counts, starts), np.append(edges[starts], edges[-1])


def histogram(limits, counts, lefts, lo, hi):
    import wandb
    c, e = histogram_edges(limits, counts, lefts, lo, hi)
    c, e = rebin(c, e)
    return wandb.Histogram(np_histogram=(c.tolist(), e.tolist()))


def logged_histogram(lefts, limits, counts):
    """An array logged with recorder.log, binned as wandb.log bins it: its edges and integer
    counts as they were, so the W&B row is the one wandb.log would have written."""
    import wandb
    return wandb.Histogram(np_histogram=([int(c) for c in counts], list(lefts) + [limits[-1]]))


# -- images, video, audio -----------------------------------------------------------------------

def image_size(data):
    """(width, height) from a PNG or GIF header, or (None, None)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:4] == b"GIF8" and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    return None, None


class _Size:
    """Stands in for the PIL image that wandb asks for only to read `.size`."""

    def __init__(self, width, height):
        self.size = (width, height)
        self.width, self.height = width, height


def _stored_image_class():
    import wandb

    class StoredImage(wandb.Image):
        """A wandb.Image made from encoded bytes on disk and a known size, without PIL."""

        def __init__(self, path, fmt, width, height):
            super(wandb.Image, self).__init__(caption=None)
            self._grouping = self._classes = self._boxes = self._masks = None
            self._file_type = None
            self._image = None
            self._width, self._height = width, height
            self._set_file(path, is_tmp=True)
            self.format = fmt

        @property
        def image(self):
            return _Size(self._width, self._height)

    return StoredImage


_IMAGE_CLS = None


def stored_image_class():
    """The one StoredImage class (wandb batches a list of images only if they share a type)."""
    global _IMAGE_CLS
    if _IMAGE_CLS is None:
        _IMAGE_CLS = _stored_image_class()
        # a table names its media cells by class: "Image", as for the original
        _IMAGE_CLS.__name__ = _IMAGE_CLS.__qualname__ = "Image"
    return _IMAGE_CLS


class MediaFactory:
    """Builds W&B objects from media rows; scratch files go to `scratch_dir`."""

    def __init__(self, scratch_dir):
        self.scratch = scratch_dir
        os.makedirs(scratch_dir, exist_ok=True)

    def _file(self, data, ext):
        path = os.path.join(self.scratch, f"m{next(_SEQ):08d}.{ext}")
        with open(path, "wb") as f:
            f.write(data or b"")
        return path

    def image(self, data, content_type, width, height):
        import wandb
        ext = _EXT.get(content_type) or "png"
        path = self._file(data, ext)
        if ext == "gif":
            video = wandb.Video(path, format="gif")
            video._is_tmp = True   # our scratch copy: moved into the run, not copied
            return video
        if not width or not height:
            width, height = image_size(data)
        return stored_image_class()(path, ext, width, height)

    def audio(self, data, content_type, sample_rate):
        import wandb
        a = wandb.Audio(self._file(data, _EXT.get(content_type) or "wav"))
        a._is_tmp = True
        a._sample_rate = int(sample_rate) if sample_rate else None
        return a

    def text(self, data, content_type):
        import wandb
        raw = data.decode("utf-8", "replace") if data is not None else ""
        if content_type == "application/json":
            try:
                cells = json.loads(raw)
            except ValueError:
                cells = None
            if isinstance(cells, list):
                return string_table(cells)
        return wandb.Html(f"<pre>{html.escape(raw)}</pre>", inject=False)

    def pr_curve(self, data):
        import wandb
        d = json.loads(data)
        n = len(d.get("precision", []))
        thresholds = np.linspace(0.0, 1.0, n).tolist() if n > 1 else [0.0] * n
        cols = ["threshold", "precision", "recall", "tp", "fp", "tn", "fn"]
        rows = [[thresholds[i]] + [float(d[k][i]) for k in cols[1:]] for i in range(n)]
        return wandb.Table(columns=cols, data=rows)

    def make(self, kind, data, content_type, width, height, sample_rate):
        if kind == "image":
            return self.image(data, content_type, width, height)
        if kind == "audio":
            return self.audio(data, content_type, sample_rate)
        if kind == "text":
            return self.text(data, content_type)
        if kind == "pr_curve":
            return self.pr_curve(data)
        return None


def string_table(cells):
    """A W&B table of a 1-D (one column) or 2-D list of strings; deeper cells as JSON."""
    import wandb
    rows = [c if isinstance(c, list) else [c] for c in cells]
    width = max((len(r) for r in rows), default=1)
    rows = [[x if isinstance(x, str) else json.dumps(x) for x in r] + [""] * (width - len(r))
            for r in rows]
    cols = ["text"] if width == 1 else [f"col{i}" for i in range(width)]
    return wandb.Table(columns=cols, data=rows)
