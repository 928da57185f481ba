"""The dump codec's word arithmetic in numpy (tfdbg_v1_codec.py): predictions from a chain's
earlier dumps, zigzagged residuals and byte planes, for the encoder's pure path (the compiled
codec_planes is its twin) and for the decoder."""

import numpy as np

_INT = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _unzigzag(z, w):
    z = z.view(_UINT[w])
    return ((z >> 1) ^ (np.zeros_like(z) - (z & 1))).view(_INT[w])


def _predict(h1, h2, h3, order):
    if order == 1:
        return h1
    if order == 2:
        return h1 + (h1 - h2)
    return 3 * (h1 - h2) + h3


def _stored(cur, hist, orders, sizes, top, steady, w):
    """The stored words: each row's words as they are (order 0) or its zigzagged residual."""
    if top == 0:
        return cur
    if steady:
        return _residual(cur, *hist, top, w)
    stored = cur.copy()
    for order in sorted(set(orders) - {0}):
        mask = np.repeat(np.array(orders) == order, sizes)
        stored[mask] = _residual(cur[mask], *(h if h is None else h[mask] for h in hist),
                                 order, w)
    return stored


def _transpose_into(words, sizes, w, data, places):
    """Each row's words as w byte planes, into `data` at its place."""
    planes, at = words.view(np.uint8), 0
    for size, place in zip(sizes.tolist(), places.tolist()):
        nbytes = size * w
        data[place:place + nbytes] = planes[at:at + nbytes].reshape(-1, w).T.ravel()
        at += nbytes


def _residual(cur, h1, h2, h3, order, w):
    """zigzag(cur - prediction) as signed words, with as few temporaries as it takes."""
    if order == 1:
        d = np.subtract(cur, h1)
    else:
        d = np.subtract(h1, h2)
        if order == 2:
            d += h1
        else:
            d *= 3
            d += h3
        np.subtract(cur, d, out=d)
    z = np.left_shift(d, 1)
    d >>= 8 * w - 1
    z ^= d
    return z


def _joined(parts, sizes, w):
    """One array of the given parts (None: zeros of that row's size)."""
    return np.concatenate([p if p is not None else np.zeros(int(s), _INT[w])
                           for p, s in zip(parts, sizes)])
