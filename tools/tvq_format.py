"""The tvq-serve model directory (spec §4): config.json and model.safetensors.

Shared by the checkpoint converter, the PyTorch trainer's exporter and their
tests. Needs only the Python standard library and NumPy.

- `make_config` / `validate_config`: the config.json keys of format_version 1.
- `expected_tensors(config)`: every tensor name with its shape.
- `read_safetensors` / `write_safetensors`: the standard safetensors layout
  (8-byte little-endian header length, JSON header, row-major data), F32,
  F16, BF16 and the integer types; BF16 travels as uint16 bit patterns.
- `float32_to_bf16_bits` / `bf16_bits_to_float32`: BF16 conversion with
  round-to-nearest-even (NaN stays NaN).
"""

import json
import os
import struct

import numpy as np

FORMAT_NAME = "transformer-vq"
FORMAT_VERSION = 1

INT_KEYS = ("d_model", "d_k", "d_v", "n_head", "n_code", "n_layer", "n_vocab",
            "block_len", "mem_len")
BOOL_KEYS = ("agg_cache", "pe_abs", "e_tie", "e_preln")


class FormatError(ValueError):
    """A config or tensor does not follow the model format."""


def sublayer_prefix(index):
    """Prefix of attention sublayer `index` (0 = layer0/attn1, 1 = layer0/attn2, ...)."""
    return "transformer_layers_%d/scanned_attn%d" % (index // 2, index % 2 + 1)


def make_config(d_model, d_k, d_v, n_head, n_code, n_layer, n_vocab, block_len,
                mem_len, agg_cache, pe_abs, pe_lam, e_tie, e_preln, e_scale,
                tokenizer_kind="byte", eos_id=1, pad_id=0, unk_id=2):
    """Builds a config.json dictionary; validates it before returning."""
    tokenizer = {"kind": tokenizer_kind}
    if tokenizer_kind == "sentencepiece":
        tokenizer["file"] = "tokenizer.model"
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "d_model": int(d_model),
        "d_k": int(d_k),
        "d_v": int(d_v),
        "n_head": int(n_head),
        "n_code": int(n_code),
        "n_layer": int(n_layer),
        "n_vocab": int(n_vocab),
        "block_len": int(block_len),
        "mem_len": int(mem_len),
        "agg_cache": bool(agg_cache),
        "pe_abs": bool(pe_abs),
        "pe_lam": pe_lam,
        "e_tie": bool(e_tie),
        "e_preln": bool(e_preln),
        "e_scale": float(e_scale),
        "eos_id": int(eos_id),
        "pad_id": int(pad_id),
        "unk_id": int(unk_id),
        "tokenizer": tokenizer,
    }
    validate_config(config)
    return config


def validate_config(config):
    """Raises FormatError naming the first bad key of a config dictionary."""
    if not isinstance(config, dict):
        raise FormatError("config must be a JSON object")
    if config.get("format") != FORMAT_NAME:
        raise FormatError('config "format" must be "%s", got %r' %
                          (FORMAT_NAME, config.get("format")))
    if config.get("format_version") != FORMAT_VERSION:
        raise FormatError('config "format_version" must be %d, got %r' %
                          (FORMAT_VERSION, config.get("format_version")))
    for key in INT_KEYS:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FormatError('config "%s" must be an integer >= 1, got %r' %
                              (key, value))
    if config["d_model"] % 2 != 0:
        raise FormatError('config "d_model" must be even, got %d' %
                          config["d_model"])
    for key in BOOL_KEYS:
        if not isinstance(config.get(key), bool):
            raise FormatError('config "%s" must be true or false, got %r' %
                              (key, config.get(key)))
    for key in ("pe_lam", "e_scale"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FormatError('config "%s" must be a number, got %r' %
                              (key, value))
    if not config["pe_lam"] > 0:
        raise FormatError('config "pe_lam" must be > 0, got %r' % config["pe_lam"])
    for key in ("eos_id", "pad_id", "unk_id"):
        value = config.get(key)
        if (isinstance(value, bool) or not isinstance(value, int) or value < 0 or
                value >= config["n_vocab"]):
            raise FormatError('config "%s" must be an id in [0, n_vocab=%d), '
                              'got %r' % (key, config["n_vocab"], value))
    tokenizer = config.get("tokenizer")
    if not isinstance(tokenizer, dict) or tokenizer.get("kind") not in (
            "byte", "sentencepiece"):
        raise FormatError('config "tokenizer" must be {"kind": "byte"} or '
                          '{"kind": "sentencepiece", "file": ...}, got %r' %
                          (tokenizer,))
    if tokenizer["kind"] == "byte" and config["n_vocab"] != 259:
        raise FormatError('config "n_vocab" must be 259 for the byte tokenizer, '
                          'got %d' % config["n_vocab"])
    if tokenizer["kind"] == "sentencepiece" and not isinstance(
            tokenizer.get("file"), str):
        raise FormatError('config "tokenizer" of kind sentencepiece needs a '
                          '"file" string')


def expected_tensors(config):
    """Returns {name: shape tuple} of every tensor the config requires (spec §4)."""
    d_model, d_k, d_v = config["d_model"], config["d_k"], config["d_v"]
    n_head, n_code, n_vocab = config["n_head"], config["n_code"], config["n_vocab"]
    shapes = {
        "token_embedder/embs": (n_vocab, d_model),
        "token_embedder/bias_out": (n_vocab,),
    }
    if config["pe_abs"]:
        shapes["position_embedder/scale"] = ()
    if config["e_preln"]:
        shapes["out_ln/g"] = (d_model,)
        shapes["out_ln/b"] = (d_model,)
    if not config["e_tie"]:
        shapes["out_proj/kernel"] = (d_model, n_vocab)
        shapes["out_proj/bias"] = (n_vocab,)
    for index in range(2 * config["n_layer"]):
        prefix = sublayer_prefix(index)
        shapes[prefix + "/input_ln/g"] = (d_model,)
        shapes[prefix + "/input_ln/b"] = (d_model,)
        shapes[prefix + "/q_proj/kernel"] = (d_model, n_head * d_k)
        shapes[prefix + "/kvg_proj/kernel"] = (d_model, n_head * (d_k + 2 * d_v))
        shapes[prefix + "/r_proj/kernel"] = (d_model, n_head * d_k)
        shapes[prefix + "/res_proj/kernel"] = (n_head * d_v, d_model)
        shapes[prefix + "/u"] = (n_head * d_k,)
        shapes[prefix + "/v"] = (n_head * d_k,)
        shapes[prefix + "/quantizer/c_sum"] = (n_head, n_code, d_k)
        shapes[prefix + "/quantizer/c_count"] = (n_head, n_code)
    return shapes


def check_tensors(config, tensors):
    """Raises FormatError for a missing, misshapen or unexpected tensor."""
    shapes = expected_tensors(config)
    for name, shape in shapes.items():
        if name not in tensors:
            raise FormatError("missing parameter %s (shape %s)" %
                              (name, list(shape)))
        actual = tuple(np.shape(tensors[name]))
        if actual != shape:
            raise FormatError("parameter %s has shape %s, the config needs %s" %
                              (name, list(actual), list(shape)))
    for name in tensors:
        if name not in shapes:
            raise FormatError("unexpected parameter %s for this config" % name)


# ---------------------------------------------------------------- bfloat16

def float32_to_bf16_bits(array):
    """float32 array -> uint16 bf16 bit patterns, round to nearest even."""
    array = np.array(array, dtype=np.float32, order="C")
    bits = array.view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    rounded = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(array)
    if np.any(nan):
        rounded = np.where(nan, ((bits >> 16) | 0x40).astype(np.uint16), rounded)
    return rounded


def bf16_bits_to_float32(bits):
    """uint16 bf16 bit patterns -> float32 array (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


# ------------------------------------------------------------- safetensors

_DTYPE_TO_NUMPY = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U8": np.uint8, "BOOL": np.bool_,
}


def read_safetensors(path):
    """Returns ({name: array}, {name: dtype string}, metadata dict).

    BF16 tensors come back as uint16 bit patterns (dtype string "BF16");
    use bf16_bits_to_float32 to read their values.
    """
    with open(path, "rb") as handle:
        blob = handle.read()
    if len(blob) < 8:
        raise FormatError("%s: shorter than the 8-byte header length" % path)
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > len(blob) - 8:
        raise FormatError("%s: header length %d exceeds the file" %
                          (path, header_len))
    try:
        header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError("%s: header is not JSON: %s" % (path, error))
    data = memoryview(blob)[8 + header_len:]
    metadata = header.pop("__metadata__", {}) or {}
    arrays, dtypes = {}, {}
    for name, entry in header.items():
        dtype = _DTYPE_TO_NUMPY.get(entry.get("dtype"))
        if dtype is None:
            raise FormatError("%s: tensor %s has unsupported dtype %r" %
                              (path, name, entry.get("dtype")))
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= begin <= end <= len(data) or (
                end - begin) != count * np.dtype(dtype).itemsize:
            raise FormatError("%s: tensor %s has bad data offsets %s" %
                              (path, name, entry["data_offsets"]))
        array = np.frombuffer(data[begin:end], dtype=np.dtype(dtype).newbyteorder("<"))
        arrays[name] = array.astype(dtype).reshape(shape)
        dtypes[name] = entry["dtype"]
    return arrays, dtypes, metadata


def write_safetensors(path, tensors, dtype="F32", metadata=None):
    """Writes float tensors as `dtype` ("F32" or "BF16"); names sorted.

    A uint16 array is taken to hold BF16 bit patterns already (written as-is
    when dtype is BF16, widened exactly when dtype is F32).
    """
    if dtype not in ("F32", "BF16"):
        raise FormatError("output dtype must be F32 or BF16, got %r" % dtype)
    def encoded(array):
        if array.dtype == np.uint16:
            values = array if dtype == "BF16" else bf16_bits_to_float32(array)
        elif dtype == "BF16":
            values = float32_to_bf16_bits(array.astype(np.float32))
        else:
            values = array.astype(np.float32)
        return values.astype(values.dtype.newbyteorder("<")).tobytes(order="C")

    # The header first (sizes follow from the shapes), then one tensor at a
    # time, so that only one converted tensor is in memory at once.
    itemsize = 2 if dtype == "BF16" else 4
    names = sorted(tensors)
    header, offset = {}, 0
    for name in names:
        shape = list(np.shape(tensors[name]))
        size = int(np.prod(shape, dtype=np.int64)) * itemsize
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # align the data to 8 bytes
    tmp_path = path + ".tmp"
    with open(tmp_path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header_bytes)))
        handle.write(header_bytes)
        for name in names:
            raw = encoded(np.asarray(tensors[name]))
            assert len(raw) == header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            handle.write(raw)
    os.replace(tmp_path, path)


def write_config(path, config):
    validate_config(config)
    with open(path, "w") as handle:
        json.dump(config, handle, indent=2)
        handle.write("\n")


def read_config(path):
    with open(path) as handle:
        try:
            config = json.load(handle)
        except json.JSONDecodeError as error:
            raise FormatError("%s: not JSON: %s" % (path, error))
    validate_config(config)
    return config
