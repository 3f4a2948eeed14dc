"""A small msgpack encoder that writes checkpoints the way Flax does, for tests.

Independent of python3-msgpack on purpose: the converter decodes with that
library, so the tests encode with this one (spec: github.com/msgpack/msgpack
spec.md). Arrays are written as flax.serialization writes them: extension
type 1 whose payload is msgpack of [shape, dtype name, row-major bytes];
`chunked(array, n)` builds the {"__msgpack_chunked_array__": ...} map that
flax uses for arrays over 2**30 bytes, here with n chunks of any size.
"""

import struct

import numpy as np

EXT_NDARRAY = 1
EXT_NPSCALAR = 3


class Ext:
    def __init__(self, code, payload):
        self.code, self.payload = code, payload


class BF16:
    """An array to be written with dtype name "bfloat16" (bits: uint16)."""

    def __init__(self, bits):
        self.bits = np.array(bits, dtype=np.uint16, order="C")


def _length_prefix(n, fixed_base, fixed_limit, codes):
    if fixed_base is not None and n < fixed_limit:
        return bytes([fixed_base | n])
    for code, fmt, limit in codes:
        if n < limit:
            return bytes([code]) + struct.pack(fmt, n)
    raise ValueError("too long: %d" % n)


def packb(obj):
    if obj is None:
        return b"\xc0"
    if obj is True:
        return b"\xc3"
    if obj is False:
        return b"\xc2"
    if isinstance(obj, int):
        if 0 <= obj < 128:
            return bytes([obj])
        if -32 <= obj < 0:
            return struct.pack(">b", obj)
        if obj >= 0:
            for code, fmt, limit in ((0xcc, ">B", 1 << 8), (0xcd, ">H", 1 << 16),
                                     (0xce, ">I", 1 << 32), (0xcf, ">Q", 1 << 64)):
                if obj < limit:
                    return bytes([code]) + struct.pack(fmt, obj)
        for code, fmt, bits in ((0xd0, ">b", 8), (0xd1, ">h", 16), (0xd2, ">i", 32),
                                (0xd3, ">q", 64)):
            if obj >= -(1 << (bits - 1)):
                return bytes([code]) + struct.pack(fmt, obj)
        raise ValueError("int out of range")
    if isinstance(obj, float):
        return b"\xcb" + struct.pack(">d", obj)
    if isinstance(obj, str):
        raw = obj.encode("utf-8")
        return _length_prefix(len(raw), 0xa0, 32, ((0xd9, ">B", 1 << 8),
                                                   (0xda, ">H", 1 << 16),
                                                   (0xdb, ">I", 1 << 32))) + raw
    if isinstance(obj, (bytes, bytearray)):
        return _length_prefix(len(obj), None, 0, ((0xc4, ">B", 1 << 8),
                                                  (0xc5, ">H", 1 << 16),
                                                  (0xc6, ">I", 1 << 32))) + bytes(obj)
    if isinstance(obj, (list, tuple)):
        head = _length_prefix(len(obj), 0x90, 16, ((0xdc, ">H", 1 << 16),
                                                   (0xdd, ">I", 1 << 32)))
        return head + b"".join(packb(item) for item in obj)
    if isinstance(obj, dict):
        head = _length_prefix(len(obj), 0x80, 16, ((0xde, ">H", 1 << 16),
                                                   (0xdf, ">I", 1 << 32)))
        return head + b"".join(packb(k) + packb(v) for k, v in obj.items())
    if isinstance(obj, np.ndarray):
        return packb(Ext(EXT_NDARRAY, array_payload(obj)))
    if isinstance(obj, BF16):
        payload = packb([list(obj.bits.shape), "bfloat16", obj.bits.tobytes()])
        return packb(Ext(EXT_NDARRAY, payload))
    if isinstance(obj, np.generic):
        return packb(Ext(EXT_NPSCALAR, array_payload(np.asarray(obj))))
    if isinstance(obj, Ext):
        n = len(obj.payload)
        fixed = {1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8}
        if n in fixed:
            head = bytes([fixed[n]])
        else:
            head = _length_prefix(n, None, 0, ((0xc7, ">B", 1 << 8),
                                               (0xc8, ">H", 1 << 16),
                                               (0xc9, ">I", 1 << 32)))
        return head + struct.pack(">b", obj.code) + obj.payload
    raise TypeError("cannot encode %r" % type(obj))


def array_payload(array):
    array = np.array(array, order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
    little = array.astype(array.dtype.newbyteorder("<"))
    return packb([list(array.shape), array.dtype.name, little.tobytes()])


def chunked(array, n_chunks):
    """Flax's chunked form of a big array, split into n_chunks flat pieces."""
    flat = np.asarray(array).reshape(-1)
    bounds = np.linspace(0, flat.size, n_chunks + 1).astype(int)
    return {
        "__msgpack_chunked_array__": True,
        "shape": {str(i): int(n) for i, n in enumerate(array.shape)},
        "chunks": {str(i): flat[bounds[i]:bounds[i + 1]] for i in range(n_chunks)},
    }


def nest(flat):
    """{"a/b/c": value} -> {"a": {"b": {"c": value}}}."""
    tree = {}
    for name, value in flat.items():
        node = tree
        parts = name.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree
