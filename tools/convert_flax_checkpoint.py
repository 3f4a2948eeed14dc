#!/usr/bin/python3
"""Convert an official Transformer-VQ (JAX/Flax) checkpoint to a tvq-serve model directory.

    /usr/bin/python3 tools/convert_flax_checkpoint.py CHECKPOINT OUT_DIR \\
        --preset enwik8 --n_code 512 --block_len 512 --mem_len 512 --agg_cache 1

CHECKPOINT is what the official `save_checkpoint` wrote for step N:
- a file `checkpoint_N`: flax.serialization msgpack (the legacy Flax format);
- a directory `checkpoint_N/` holding a msgpack file named `checkpoint`
  (flax 0.6.11 saves through Orbax 0.1.7 by default; fully replicated arrays
  are aggregated into that one msgpack file in the same encoding);
- or the checkpoint directory holding several of those: the highest N wins.

The msgpack holds the train state {step, params, opt_state}: nested maps,
arrays as msgpack extension type 1 whose payload is itself msgpack of
(shape, dtype name, row-major bytes) (type 3: numpy scalars), and arrays
over 2**30 bytes split into {"__msgpack_chunked_array__": true, "shape":
{"0": ..}, "chunks": {"0": flat array, ..}}. Only `params` is read; its
paths joined by "/" are the tensor names of spec §4.

config.json comes from flags named as the official launch flags (values
0/1 or true/false for switches; `--agg_cache=1` and `--agg_cache 1` both
work), from `--preset` (the architecture of scripts/lm_{enwik8,pg19,
imagenet64}.sh) and/or from `--config FILE` (JSON with the same keys, e.g.
an existing config.json); later sources override earlier ones: preset <
config file < flags. block_len, mem_len and agg_cache are launch-time
choices (-l, -m, -a of the scripts) that the checkpoint does not record:
give them explicitly.

Every tensor of spec §4 must be present with its shape; the config is checked
against the arrays first (d_model, n_vocab, n_layer, n_head, n_code, d_k,
d_v, e_tie, e_preln, pe_abs). Errors exit with status 2 and a message naming
the flag or parameter. Needs only python3-msgpack and python3-numpy.
"""

import argparse
import json
import os
import re
import shutil
import sys

import msgpack
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tvq_format  # noqa: E402
import tvq_stacked  # noqa: E402

EXIT_USAGE = 2

# Architecture flags of the official launch scripts (scripts/lm_*.sh @21943e4).
PRESETS = {
    "enwik8": dict(d_model=768, d_k=128, d_v=1536, n_head=1, n_layer=24,
                   pe_abs=False, e_tie=False, e_preln=False, e_scale=1.0,
                   tokenizer="byte"),
    "pg19": dict(d_model=2048, d_k=128, d_v=4096, n_head=1, n_layer=24,
                 pe_abs=False, e_tie=True, e_preln=True, e_scale=0.005),
    "imagenet64": dict(d_model=2048, d_k=128, d_v=4096, n_head=1, n_layer=24,
                       pe_abs=True, e_tie=True, e_preln=True, e_scale=0.005,
                       tokenizer="byte"),
}
CONFIG_KEYS = ("d_model", "d_k", "d_v", "n_head", "n_code", "n_layer", "n_vocab",
               "block_len", "mem_len", "agg_cache", "pe_abs", "pe_lam", "e_tie",
               "e_preln", "e_scale")
BOOL_FLAGS = ("agg_cache", "pe_abs", "e_tie", "e_preln")
FLOAT_FLAGS = ("pe_lam", "e_scale")
# Flags of the official launcher that do not affect inference: accepted so a
# launch command line can be pasted, and ignored.
IGNORED_OFFICIAL_FLAGS = (
    "multihost", "command", "dataset", "data_dir", "vocab_path", "prng_seed",
    "global_batch_size", "sequence_len", "update_len", "grad_thru_cache",
    "param_dtype", "d_ff", "p_dropemb", "p_dropsin", "p_dropres", "p_droplyr",
    "c_beta", "c_gamma", "grad_clip", "optimizer", "lr_max", "lr_schedule",
    "wd_lam", "p_nucleus", "n_warmup_step", "n_max_step", "n_extra_step",
    "n_print_step", "n_save_step", "n_eval_step", "n_save_keep",
    "in_checkpoint_dir", "out_checkpoint_dir", "model_name", "run_id")

CHUNKED_MARK = "__msgpack_chunked_array__"
EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3


class ConversionError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


# ------------------------------------------------------------ reading msgpack

class LazyArray:
    """An extension-type-1/3 payload, decoded only when used.

    Keeps the optimizer state (as large as the parameters, or twice) from
    being turned into arrays that are thrown away.
    """

    def __init__(self, payload, scalar):
        self.payload = payload
        self.scalar = scalar
        self.array = None

    def decode(self, where):
        """The array; the encoded bytes are released once decoded."""
        if self.array is None:
            self.array = self._decode(where)
            self.payload = None
        return self.array

    def _decode(self, where):
        try:
            shape, dtype_name, buffer = msgpack.unpackb(self.payload, raw=True)
            dtype_name = dtype_name.decode("ascii")
            shape = tuple(int(n) for n in shape)
        except Exception as error:  # malformed payload of any kind
            raise ConversionError("%s: malformed array payload (%s)" % (where, error))
        if dtype_name == "bfloat16":
            bits = np.frombuffer(buffer, dtype="<u2")
            array = tvq_format.bf16_bits_to_float32(bits)
        else:
            try:
                dtype = np.dtype(dtype_name).newbyteorder("<")
            except TypeError:
                raise ConversionError("%s: unsupported dtype %r" % (where, dtype_name))
            array = np.frombuffer(buffer, dtype=dtype)
        if array.size != int(np.prod(shape, dtype=np.int64)):
            raise ConversionError("%s: %d values for shape %s" %
                                  (where, array.size, list(shape)))
        return array.reshape(shape)


def _ext_hook(code, data):
    if code == EXT_NDARRAY:
        return LazyArray(data, scalar=False)
    if code == EXT_NPSCALAR:
        return LazyArray(data, scalar=True)
    if code == EXT_COMPLEX:
        return complex(*msgpack.unpackb(data))
    return msgpack.ExtType(code, data)


OCDBT_MARKERS = ("manifest.ocdbt", "_METADATA", "ocdbt.process_0")
OCDBT_HOW_TO = (
    "restore it with the Flax/Orbax version that wrote it and save the train "
    "state as msgpack, e.g. in Python: "
    "state = orbax.checkpoint.PyTreeCheckpointer().restore(PATH); "
    "open('checkpoint_N', 'wb').write(flax.serialization.to_bytes(state)); "
    "then convert that file")


def is_ocdbt_checkpoint(path):
    """True for a directory that current Orbax wrote in its OCDBT layout."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, marker)) for marker in OCDBT_MARKERS)


def find_checkpoint_file(path):
    """Resolves CHECKPOINT to the msgpack file to read."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise ConversionError("checkpoint %s does not exist" % path)
    if is_ocdbt_checkpoint(path):
        raise ConversionError(
            "%s is an Orbax OCDBT checkpoint (current Flax/Orbax: _METADATA, "
            "manifest.ocdbt, ocdbt.process_0/ hold the arrays in TensorStore's "
            "OCDBT key-value format), which this converter does not read; %s"
            % (path, OCDBT_HOW_TO))
    orbax_file = os.path.join(path, "checkpoint")
    if os.path.isfile(orbax_file):
        return orbax_file
    steps = []
    for name in os.listdir(path):
        match = re.fullmatch(r"checkpoint_(\d+)", name)
        if match:
            steps.append((int(match.group(1)), name))
    if not steps:
        raise ConversionError(
            "%s holds no checkpoint: expected a file checkpoint_N, or a "
            "directory with a msgpack file named 'checkpoint' (flax 0.6.11)"
            % path)
    _, newest = max(steps)
    print("using %s (highest step in %s)" % (newest, path))
    return find_checkpoint_file(os.path.join(path, newest))


def read_checkpoint(path):
    """Returns the deserialized train-state tree (arrays still lazy)."""
    try:
        with open(path, "rb") as handle:
            unpacker = msgpack.Unpacker(handle, ext_hook=_ext_hook, raw=False,
                                        strict_map_key=False,
                                        max_buffer_size=0)
            tree = unpacker.unpack()
            try:
                unpacker.unpack()
                trailing = True
            except msgpack.OutOfData:
                trailing = False
    except msgpack.OutOfData:
        raise ConversionError("%s: truncated msgpack (the file ends early)" % path)
    except (msgpack.UnpackException, ValueError, TypeError) as error:
        raise ConversionError("%s: not a Flax msgpack checkpoint (%s)" % (path, error))
    if trailing:
        raise ConversionError("%s: extra data after the msgpack object; not a "
                              "Flax checkpoint" % path)
    if not isinstance(tree, dict):
        raise ConversionError("%s: the checkpoint is a msgpack %s, not a map" %
                              (path, type(tree).__name__))
    return tree


def find_params(tree):
    """Returns (params subtree, its path) of a train state."""
    node, path = tree, []
    while (isinstance(node, dict) and "token_embedder" not in node and
           "token_embed" not in node):
        if "params" not in node:
            raise ConversionError(
                "no 'params' with a 'token_embedder' (or, optimized branch, "
                "'token_embed') in the checkpoint (top-level "
                "keys at %s: %s)" % ("/".join(path) or "the root",
                                     sorted(map(str, node))))
        node = node["params"]
        path.append("params")
    if not isinstance(node, dict):
        raise ConversionError("checkpoint entry %s is not a map" % "/".join(path))
    return node, "/".join(path) or "(root)"


def _unchunk(node, where):
    try:
        shape = tuple(int(node["shape"][str(i)]) for i in range(len(node["shape"])))
        chunks = [node["chunks"][str(i)] for i in range(len(node["chunks"]))]
    except (KeyError, TypeError, ValueError) as error:
        raise ConversionError("%s: malformed chunked array (%s)" % (where, error))
    pieces = []
    for index, chunk in enumerate(chunks):
        if not isinstance(chunk, LazyArray):
            raise ConversionError("%s: chunk %d is not an array" % (where, index))
        pieces.append(chunk.decode("%s chunk %d" % (where, index)).reshape(-1))
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if flat.size != int(np.prod(shape, dtype=np.int64)):
        raise ConversionError("%s: chunks hold %d values for shape %s" %
                              (where, flat.size, list(shape)))
    return flat.reshape(shape)


def flatten_params(params):
    """{"a/b/c": numpy array} of every leaf of the params tree."""
    flat = {}

    def visit(node, prefix):
        if isinstance(node, dict) and CHUNKED_MARK in node:
            flat[prefix] = _unchunk(node, prefix)
        elif isinstance(node, dict):
            for key, child in node.items():
                visit(child, "%s/%s" % (prefix, key) if prefix else str(key))
        elif isinstance(node, LazyArray):
            flat[prefix] = node.decode(prefix)
        elif isinstance(node, str) and "://" in node:
            raise ConversionError(
                "parameter %s is stored outside the msgpack file (%r): Orbax "
                "wrote it with TensorStore, which this converter does not read; "
                "restore the checkpoint with the official code and save it with "
                "flax.serialization.to_bytes" % (prefix, node))
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            flat[prefix] = np.asarray(node, dtype=np.float32)
        else:
            raise ConversionError("parameter %s is a %s, not an array" %
                                  (prefix, type(node).__name__))

    visit(params, "")
    return flat


# ------------------------------------------------------------------- config

def _parse_bool(value, name):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ConversionError("--%s must be 0/1 or true/false, got %r" % (name, value))


def _parse_number(value, name, kind):
    try:
        number = float(value) if kind is float else int(str(value), 10)
    except (TypeError, ValueError):
        raise ConversionError("--%s must be %s, got %r" %
                              (name, "a number" if kind is float else "an integer", value))
    if kind is float and number.is_integer() and name == "pe_lam":
        return int(number)
    return number


def parse_tokenizer(value):
    if value == "byte":
        return "byte", None
    if value.startswith("sentencepiece:") and len(value) > len("sentencepiece:"):
        return "sentencepiece", value[len("sentencepiece:"):]
    raise ConversionError("--tokenizer must be 'byte' or 'sentencepiece:FILE', got %r"
                          % value)


def sentencepiece_piece_count(path):
    """Number of pieces of a SentencePiece ModelProto (field 1, repeated).

    A small protobuf walk so that only NumPy and msgpack are needed.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    position, count = 0, 0

    def varint():
        nonlocal position
        result, shift = 0, 0
        while True:
            if position >= len(data):
                raise ConversionError("%s: not a SentencePiece model (truncated)" % path)
            byte = data[position]
            position += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while position < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 1:
            position += 8
        elif wire == 2:
            length = varint()  # read before adding: varint() moves position
            position += length
        elif wire == 5:
            position += 4
        else:
            raise ConversionError("%s: not a SentencePiece model (wire type %d)" %
                                  (path, wire))
        if field == 1 and wire == 2:
            count += 1
    if position != len(data) or count == 0:
        raise ConversionError("%s: not a SentencePiece model" % path)
    return count


def build_config(args, extra_settings):
    """Merges preset < --config file < flags into a config.json dictionary."""
    settings = {}
    if args.preset:
        settings.update(PRESETS[args.preset])
    if args.config:
        try:
            with open(args.config) as handle:
                from_file = json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise ConversionError("--config %s: %s" % (args.config, error))
        if not isinstance(from_file, dict):
            raise ConversionError("--config %s must hold a JSON object" % args.config)
        for key, value in from_file.items():
            if key in CONFIG_KEYS:
                settings[key] = value
            elif key == "tokenizer" and isinstance(value, dict):
                if value.get("kind") == "byte":
                    settings["tokenizer"] = "byte"
                elif value.get("kind") == "sentencepiece":
                    file_name = os.path.join(os.path.dirname(args.config),
                                             value.get("file", "tokenizer.model"))
                    settings["tokenizer"] = "sentencepiece:" + file_name
            elif key == "tokenizer" and isinstance(value, str):
                settings["tokenizer"] = value
    settings.update(extra_settings)

    kind, tokenizer_file = parse_tokenizer(settings.get("tokenizer", "byte"))
    if kind == "sentencepiece":
        if not os.path.isfile(tokenizer_file):
            raise ConversionError("--tokenizer: %s does not exist" % tokenizer_file)
        pieces = sentencepiece_piece_count(tokenizer_file)
        settings.setdefault("n_vocab", pieces)
    else:
        pieces = None
        settings.setdefault("n_vocab", 259)
    settings.setdefault("pe_lam", 100000)

    missing = [key for key in CONFIG_KEYS if key not in settings]
    if missing:
        raise ConversionError(
            "missing flag%s: %s (block_len, mem_len and agg_cache are the -l, -m "
            "and -a of the official launch scripts; they are not stored in the "
            "checkpoint)" % ("s" if len(missing) > 1 else "",
                             " ".join("--" + key for key in missing)))
    values = {}
    for key in CONFIG_KEYS:
        if key in BOOL_FLAGS:
            values[key] = _parse_bool(settings[key], key)
        elif key in FLOAT_FLAGS:
            values[key] = _parse_number(settings[key], key, float)
        else:
            values[key] = _parse_number(settings[key], key, int)
    if pieces is not None and values["n_vocab"] != pieces:
        raise ConversionError("--n_vocab %d does not match the %d pieces of %s" %
                              (values["n_vocab"], pieces, tokenizer_file))
    try:
        config = tvq_format.make_config(tokenizer_kind=kind, **values)
    except tvq_format.FormatError as error:
        raise ConversionError(str(error))
    return config, tokenizer_file


def check_config_against_params(config, arrays):
    """Names the config keys that contradict the arrays, before any shape check."""
    problems = []

    def shape(name):
        return tuple(arrays[name].shape) if name in arrays else None

    embs = shape("token_embedder/embs")
    if embs is not None and len(embs) == 2:
        if embs[1] != config["d_model"]:
            problems.append("d_model=%d but token_embedder/embs is %s (d_model %d)" %
                            (config["d_model"], list(embs), embs[1]))
        if embs[0] != config["n_vocab"]:
            problems.append("n_vocab=%d but token_embedder/embs is %s (n_vocab %d)" %
                            (config["n_vocab"], list(embs), embs[0]))
    layers = {int(m.group(1)) for m in
              (re.match(r"transformer_layers_(\d+)/", name) for name in arrays) if m}
    if layers and len(layers) != config["n_layer"]:
        problems.append("n_layer=%d but the checkpoint has %d layers "
                        "(transformer_layers_0..%d)" %
                        (config["n_layer"], len(layers), max(layers)))
    c_sum = shape("transformer_layers_0/scanned_attn1/quantizer/c_sum")
    if c_sum is not None and len(c_sum) == 3:
        for key, actual in zip(("n_head", "n_code", "d_k"), c_sum):
            if config[key] != actual:
                problems.append("%s=%d but transformer_layers_0/scanned_attn1/"
                                "quantizer/c_sum is %s (%s %d)" %
                                (key, config[key], list(c_sum), key, actual))
        res = shape("transformer_layers_0/scanned_attn1/res_proj/kernel")
        if res is not None and len(res) == 2 and res[0] % c_sum[0] == 0:
            d_v = res[0] // c_sum[0]
            if d_v != config["d_v"]:
                problems.append("d_v=%d but transformer_layers_0/scanned_attn1/"
                                "res_proj/kernel is %s (d_v %d)" %
                                (config["d_v"], list(res), d_v))
    for key, name, present_when in (("e_tie", "out_proj/kernel", False),
                                    ("e_preln", "out_ln/g", True),
                                    ("pe_abs", "position_embedder/scale", True)):
        present = name in arrays
        if present != (config[key] == present_when):
            problems.append("%s=%s but the checkpoint %s %s" % (
                key, "1" if config[key] else "0",
                "has" if present else "has no", name))
    if problems:
        raise ConversionError("the config does not match the checkpoint:\n  " +
                              "\n  ".join(problems))


# --------------------------------------------------------------------- main

def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See docs/models.md for the flags of the enwik8, PG-19 and "
               "ImageNet64 configurations.")
    parser.add_argument("checkpoint", help="checkpoint_N file or directory")
    parser.add_argument("out_dir", help="model directory to write")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="architecture flags of an official launch script")
    parser.add_argument("--config", help="JSON file with config keys (e.g. a config.json)")
    for key in CONFIG_KEYS:
        parser.add_argument("--" + key)
    parser.add_argument("--tokenizer", help="byte (default) or sentencepiece:FILE")
    parser.add_argument("--out-dtype", "--out_dtype", dest="out_dtype",
                        default="float32",
                        choices=("float32", "fp32", "f32", "bfloat16", "bf16"),
                        help="dtype of the written model.safetensors (default float32)")
    # The official launcher's --dtype is the activation (compute) dtype; its
    # parameters are float32 whatever it says. Accepted so that a pasted
    # launch line works, and never taken as the output dtype.
    parser.add_argument("--dtype", dest="official_dtype",
                        help=argparse.SUPPRESS)
    parser.add_argument("--force", action="store_true",
                        help="overwrite files in a non-empty out_dir")
    # Drop the launcher's training-only flags before parsing, with their
    # values ("--flag=value" or "--flag value").
    kept, ignored, index = [], [], 0
    while index < len(argv):
        item = argv[index]
        name = item[2:].split("=", 1)[0] if item.startswith("--") else None
        if name in IGNORED_OFFICIAL_FLAGS:
            ignored.append(name)
            if "=" not in item:
                index += 1
        else:
            kept.append(item)
        index += 1
    args = parser.parse_args(kept)
    if ignored:
        print("ignoring training-only flags: %s" % " ".join(ignored))
    if args.official_dtype is not None:
        print("ignoring --dtype=%s: it is the official activation dtype (the "
              "checkpoint's parameters are float32); the output is %s (choose it "
              "with --out-dtype)" % (args.official_dtype, args.out_dtype))
    return args


def convert(args):
    settings = {key: getattr(args, key) for key in CONFIG_KEYS
                if getattr(args, key) is not None}
    if args.tokenizer is not None:
        settings["tokenizer"] = args.tokenizer
    config, tokenizer_file = build_config(args, settings)

    if (os.path.isdir(args.out_dir) and os.listdir(args.out_dir) and not args.force):
        raise ConversionError("%s exists and is not empty (use --force)" % args.out_dir)

    source = find_checkpoint_file(args.checkpoint)
    tree = read_checkpoint(source)
    params, params_path = find_params(tree)
    arrays = flatten_params(params)
    check_config_against_params(config, arrays)
    try:
        tvq_format.check_tensors(config, arrays)
    except tvq_format.FormatError as error:
        raise ConversionError(str(error))
    for name, array in arrays.items():
        if array.dtype.kind != "f":
            raise ConversionError("parameter %s has dtype %s, not floating point" %
                                  (name, array.dtype))

    dtype = "BF16" if args.out_dtype in ("bfloat16", "bf16") else "F32"
    os.makedirs(args.out_dir, exist_ok=True)
    step = tree.get("step")
    metadata = {"generator": "tools/convert_flax_checkpoint.py",
                "source": os.path.basename(os.path.normpath(args.checkpoint))}
    if isinstance(step, LazyArray):
        metadata["step"] = int(step.decode("step"))
    elif isinstance(step, int):
        metadata["step"] = step
    tvq_format.write_safetensors(os.path.join(args.out_dir, "model.safetensors"),
                                 arrays, dtype=dtype, metadata=metadata)
    tvq_format.write_config(os.path.join(args.out_dir, "config.json"), config)
    if tokenizer_file is not None:
        shutil.copyfile(tokenizer_file, os.path.join(args.out_dir, "tokenizer.model"))
    n_params = sum(int(a.size) for a in arrays.values())
    print("wrote %s: %d tensors, %d parameters, %s (params from %s of %s)" %
          (args.out_dir, len(arrays), n_params, dtype, params_path, source))


def convert_stacked(argv):
    """An optimized-branch checkpoint (format_version 2), from a pasted
    official launch command line."""
    try:
        fields, notes, model_name, rest = tvq_stacked.parse_command_line(argv)
    except tvq_stacked.StackedError as error:
        raise ConversionError(str(error))
    parser = argparse.ArgumentParser(
        prog="convert_flax_checkpoint.py",
        description="optimized-branch checkpoint (official launch flags)")
    parser.add_argument("checkpoint", help="WORKDIR, a state_N directory or a checkpoint file")
    parser.add_argument("out_dir")
    parser.add_argument("--out-dtype", "--out_dtype", dest="out_dtype",
                        default="float32",
                        choices=("float32", "fp32", "f32", "bfloat16", "bf16"))
    parser.add_argument("--dtype", dest="official_dtype", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", default=None,
                        help="byte (enwik8, imagenet64) or sentencepiece:FILE (pg19)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(rest)
    for note in notes:
        print(note)
    if args.official_dtype is not None:
        print("ignoring --dtype=%s: it is the official activation dtype (the "
              "checkpoint's parameters are float32); the output is %s (choose it "
              "with --out-dtype)" % (args.official_dtype, args.out_dtype))
    tokenizer = args.tokenizer
    if tokenizer is None:
        if fields.get("dataset", "enwik8") not in tvq_stacked.BYTE_DATASETS:
            raise ConversionError(
                "dataset %s uses a SentencePiece vocabulary: give --tokenizer "
                "sentencepiece:FILE (its vocab_path)" % fields.get("dataset"))
        tokenizer = "byte"
    kind, tokenizer_file = parse_tokenizer(tokenizer)
    if kind == "sentencepiece" and not os.path.isfile(tokenizer_file):
        raise ConversionError("--tokenizer: %s does not exist" % tokenizer_file)
    if (os.path.isdir(args.out_dir) and os.listdir(args.out_dir) and not args.force):
        raise ConversionError("%s exists and is not empty (use --force)" % args.out_dir)

    if not os.path.exists(args.checkpoint):
        raise ConversionError("checkpoint %s does not exist" % args.checkpoint)
    try:
        found = tvq_stacked.find_step_checkpoint(args.checkpoint, fields, model_name)
    except tvq_stacked.StackedError as error:
        raise ConversionError(str(error))
    if found is not None:
        source, note = found
        if note:
            print(note)
    else:
        source = find_checkpoint_file(args.checkpoint)
    tree = read_checkpoint(source)
    if not isinstance(tree.get("params"), dict):
        raise ConversionError("%s: the train state has no 'params' (top-level keys: %s)"
                              % (source, sorted(map(str, tree))))
    params = tree["params"]
    if "stack" not in params:
        raise ConversionError(
            "%s: params hold no 'stack' (layers of the optimized branch); a "
            "main-branch checkpoint is converted with the converter's own flags "
            "(--d_model ..., see docs/models.md)" % source)
    arrays = flatten_params(params)
    embedding = arrays.get("token_embed/embedding")
    if embedding is None or embedding.ndim != 2:
        raise ConversionError("missing parameter token_embed/embedding")
    n_vocab = int(embedding.shape[0])
    if kind == "sentencepiece":
        pieces = sentencepiece_piece_count(tokenizer_file)
        if pieces > n_vocab:
            raise ConversionError("%s has %d pieces but the embedding has %d rows"
                                  % (tokenizer_file, pieces, n_vocab))
    try:
        config = tvq_stacked.make_config(fields, n_vocab, kind)
        tvq_stacked.check_tensors(config, arrays)
    except tvq_stacked.StackedError as error:
        raise ConversionError(str(error))
    for name, array in arrays.items():
        if array.dtype.kind != "f":
            raise ConversionError("parameter %s has dtype %s, not floating point" %
                                  (name, array.dtype))
    dtype = "BF16" if args.out_dtype in ("bfloat16", "bf16") else "F32"
    os.makedirs(args.out_dir, exist_ok=True)
    metadata = {"generator": "tools/convert_flax_checkpoint.py",
                "source": os.path.relpath(source, args.checkpoint)
                if os.path.isdir(args.checkpoint) else os.path.basename(source)}
    step = tree.get("step")
    if isinstance(step, LazyArray):
        metadata["step"] = int(step.decode("step"))
    elif isinstance(step, int):
        metadata["step"] = step
    tvq_format.write_safetensors(os.path.join(args.out_dir, "model.safetensors"),
                                 arrays, dtype=dtype, metadata=metadata)
    with open(os.path.join(args.out_dir, "config.json"), "w") as handle:
        json.dump(config, handle, indent=2)
        handle.write("\n")
    if tokenizer_file is not None:
        shutil.copyfile(tokenizer_file, os.path.join(args.out_dir, "tokenizer.model"))
    n_params = sum(int(a.size) for a in arrays.values())
    print("wrote %s: format_version 2 (%s), %d tensors, %d parameters, %s "
          "(params of %s)" % (args.out_dir, config["head_type"], len(arrays),
                              n_params, dtype, source))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if tvq_stacked.is_official_command_line(argv):
        try:
            convert_stacked(argv)
        except (ConversionError, OSError) as error:
            print("convert_flax_checkpoint: error: %s" % error, file=sys.stderr)
            return EXIT_USAGE
        return 0
    args = parse_args(argv)
    try:
        convert(args)
    except ConversionError as error:
        print("convert_flax_checkpoint: error: %s" % error, file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print("convert_flax_checkpoint: error: %s" % error, file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
