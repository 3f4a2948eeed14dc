"""format_version 2 (the official optimized branch's family) for the Python tools.

What docs/model-format.md ("format_version 2") specifies, for the converter:
the model fields of the official launch configuration, reading a pasted
official command line (`--config=scripts/config_X.py --config.KEY=VALUE`),
finding the newest step of an official work directory, the config.json
dictionary and the tensors it needs. Needs only NumPy.
"""

import ast
import os
import re

import tvq_format

FORMAT_VERSION = 2
HEAD_TYPES = ("shga", "mqa", "mha")
# The official TransformerConfig fields that shape the served model.
MODEL_FIELDS = ("head_type", "d_model", "d_k", "n_code", "n_layer", "block_len",
                "pe_abs", "pe_lam", "e_tie", "e_preln", "e_scale")
BOOL_FIELDS = ("pe_abs", "e_tie", "e_preln")
FLOAT_FIELDS = ("pe_lam", "e_scale")
# Fields of the official config that matter only for training (or for the
# activation dtype, which is not the parameters' dtype): ignored.
TRAINING_FIELDS = (
    "prng_seed", "global_batch_size", "sequence_len", "param_dtype", "dtype",
    "attn_type", "reduction_type", "p_dropsin", "p_dropres", "p_droplyr",
    "c_beta", "c_gamma", "grad_clip", "optimizer", "lr_max", "lr_schedule",
    "wd_lam", "n_warmup_step", "n_max_step", "n_print_step", "n_save_step",
    "n_eval_step", "n_save_keep", "no_emb")
# Flags of scripts/launch.py itself (not --config.*): ignored.
LAUNCH_FLAGS = ("multihost", "mode", "workdir", "wb_enabled", "wb_run",
                "gpu_coord_addr", "gpu_n_process", "gpu_process_id")

# The model fields of the official config files (scripts/config_*.py of the
# optimized branch, commit 293e3b1), used when the file itself is not on
# this machine.
OFFICIAL_CONFIGS = {
    "config_enwik8.py": dict(dataset="enwik8", block_len=512, head_type="shga",
                             d_model=768, d_k=128, n_code=512, n_layer=24,
                             pe_abs=False, pe_lam=100000, e_tie=False,
                             e_preln=False, e_scale=1.0),
    "config_throughput.py": dict(dataset="enwik8", block_len=512,
                                 head_type="shga", d_model=768, d_k=128,
                                 n_code=512, n_layer=24, pe_abs=False,
                                 pe_lam=100000, e_tie=False, e_preln=False,
                                 e_scale=1.0),
    "config_tiny.py": dict(dataset="enwik8", block_len=50, head_type="shga",
                           d_model=768, d_k=128, n_code=50, n_layer=2,
                           pe_abs=False, pe_lam=100000, e_tie=False,
                           e_preln=False, e_scale=1.0),
    "config_pg19.py": dict(dataset="pg19", block_len=512, head_type="shga",
                           d_model=2048, d_k=128, n_code=512, n_layer=24,
                           pe_abs=False, pe_lam=100000, e_tie=True,
                           e_preln=True, e_scale=0.005),
    "config_imagenet64.py": dict(dataset="imagenet64", block_len=512,
                                 head_type="shga", d_model=2048, d_k=128,
                                 n_code=512, n_layer=24, pe_abs=False,
                                 pe_lam=100000, e_tie=True, e_preln=True,
                                 e_scale=0.005),
}
BYTE_DATASETS = ("enwik8", "imagenet64")


class StackedError(Exception):
    """A user-facing error (the converter prints it and exits with 2)."""


def is_official_command_line(argv):
    """True when argv holds official launch flags (--config=X.py / --config.K=V)."""
    for item in argv:
        if item.startswith("--config.") or re.fullmatch(r"--config=.*\.py", item):
            return True
    return False


def read_config_file(path):
    """The `config.KEY = literal` assignments of an official config file.

    Parsed with ast, never executed; non-literal values (jnp dtypes) are
    skipped: they are training-only fields.
    """
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    fields = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and
                isinstance(node.targets[0], ast.Attribute) and
                isinstance(node.targets[0].value, ast.Name) and
                node.targets[0].value.id == "config"):
            try:
                fields[node.targets[0].attr] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return fields


def parse_command_line(argv):
    """Splits a pasted official command line.

    Returns (fields, notes, model_name, rest): the official config fields
    (config file < --config.KEY overrides), notes on what was ignored, the
    --model_name if given, and the arguments that are not official flags.
    """
    fields, overrides, notes, rest = {}, {}, [], []
    model_name, config_file = None, None
    ignored = []
    index = 0
    while index < len(argv):
        item = argv[index]
        index += 1
        if item in ("python", "python3") or item.endswith("launch.py"):
            continue
        if not item.startswith("--"):
            rest.append(item)
            continue
        name, has_value, value = item[2:].partition("=")
        if not has_value:
            if name.startswith("config.") or name in LAUNCH_FLAGS or name in (
                    "config", "model_name"):
                if index >= len(argv):
                    raise StackedError("--%s needs a value" % name)
                value = argv[index]
                index += 1
            else:
                rest.append(item)
                continue
        if name == "config" and value.endswith(".py"):
            config_file = value
        elif name.startswith("config."):
            overrides[name[len("config."):]] = value
        elif name == "model_name":
            model_name = value
        elif name in LAUNCH_FLAGS:
            ignored.append(name)
        else:
            rest.append(item if has_value else "--" + name)
            if not has_value:
                rest.append(value)
    if config_file is not None:
        if os.path.isfile(config_file):
            fields.update(read_config_file(config_file))
            notes.append("read the model fields of %s" % config_file)
        elif os.path.basename(config_file) in OFFICIAL_CONFIGS:
            fields.update(OFFICIAL_CONFIGS[os.path.basename(config_file)])
            notes.append("using the recorded model fields of the official %s "
                         "(commit 293e3b1)" % os.path.basename(config_file))
        else:
            raise StackedError(
                "--config=%s: no such file here, and not one of the official "
                "config files (%s)" % (config_file, ", ".join(sorted(OFFICIAL_CONFIGS))))
    fields.update(overrides)
    for key in sorted(fields):
        if key in TRAINING_FIELDS:
            if key == "dtype":
                notes.append("ignoring --config.dtype (the official activation "
                             "dtype; the parameters are float32; choose the "
                             "output with --out-dtype)" if key in overrides else
                             "ignoring the config's activation dtype")
            else:
                ignored.append("config." + key)
            del fields[key]
    if ignored:
        notes.append("ignoring training-only flags: %s" % " ".join(sorted(ignored)))
    return fields, notes, model_name, rest


def _as_bool(value, key):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise StackedError("--config.%s must be True or False, got %r" % (key, value))


def _as_number(value, key, kind):
    try:
        if kind is float:
            number = float(str(value).replace("_", ""))
            return int(number) if key == "pe_lam" and number.is_integer() else number
        if isinstance(value, bool):
            raise ValueError
        return int(str(value).replace("_", ""), 10)
    except ValueError:
        raise StackedError("--config.%s must be %s, got %r" %
                           (key, "a number" if kind is float else "an integer", value))


def make_config(fields, n_vocab, tokenizer_kind):
    """config.json (format_version 2) from the official fields; names any unset."""
    missing = [key for key in MODEL_FIELDS if key not in fields]
    if missing:
        raise StackedError(
            "the official command line leaves model field%s unset: %s (give "
            "--config=scripts/config_….py or --config.KEY=VALUE for each)" %
            ("s" if len(missing) > 1 else "",
             " ".join("config." + key for key in missing)))
    config = {"format": tvq_format.FORMAT_NAME, "format_version": FORMAT_VERSION}
    head_type = str(fields["head_type"])
    if head_type not in HEAD_TYPES:
        raise StackedError("--config.head_type must be shga, mqa or mha, got %r"
                           % head_type)
    config["head_type"] = head_type
    for key in ("d_model", "d_k", "n_code", "n_layer", "block_len"):
        config[key] = _as_number(fields[key], key, int)
        if config[key] < 1:
            raise StackedError("--config.%s must be >= 1, got %d" % (key, config[key]))
    config["n_vocab"] = int(n_vocab)
    for key in BOOL_FIELDS:
        config[key] = _as_bool(fields[key], key)
    for key in FLOAT_FIELDS:
        config[key] = _as_number(fields[key], key, float)
    if config["d_model"] % config["d_k"] != 0 or config["d_model"] % 2 != 0:
        raise StackedError("config.d_model (%d) must be even and a multiple of "
                           "config.d_k (%d)" % (config["d_model"], config["d_k"]))
    config.update(eos_id=1, pad_id=0, unk_id=2)
    config["tokenizer"] = {"kind": tokenizer_kind}
    if tokenizer_kind == "sentencepiece":
        config["tokenizer"]["file"] = "tokenizer.model"
    return config


def derived_sizes(config):
    """(n_query_head, n_kv_head, d_v, d_ff) as the official code derives them."""
    d_model, d_k = config["d_model"], config["d_k"]
    heads = d_model // d_k
    return {"shga": (1, 1, 2 * d_model, 0),
            "mqa": (heads, 1, d_k, 5 * d_model),
            "mha": (heads, heads, d_k, 4 * d_model)}[config["head_type"]]


def expected_tensors(config):
    """{name: shape} of every tensor format_version 2 requires."""
    D, V, L = config["d_model"], config["n_vocab"], config["n_layer"]
    d_k, S = config["d_k"], config["n_code"]
    n_q, n_kv, d_v, d_ff = derived_sizes(config)
    shapes = {"token_embed/embedding": (V, D)}
    if config["pe_abs"]:
        shapes["pos_embed/scale"] = ()
    if not config["e_tie"]:
        shapes["out_proj/kernel"] = (D, V)
        shapes["out_proj/bias"] = (V,)
    for a in range(2 if config["head_type"] == "shga" else 1):
        p = "stack/VQAttention_%d/" % a
        shapes[p + "qkvg_producer/q_proj/kernel"] = (L, 1, D, n_q * d_k)
        shapes[p + "qkvg_producer/k_proj/kernel"] = (L, 1, D, n_kv * d_k)
        shapes[p + "qkvg_producer/v_proj/kernel"] = (L, 1, D, n_kv * d_v)
        if config["head_type"] == "shga":
            shapes[p + "qkvg_producer/g_proj/kernel"] = (L, 1, D, d_v)
        shapes[p + "xl_bias_producer/xl_r_proj/kernel"] = (L, 1, D, n_kv * d_k)
        shapes[p + "xl_bias_producer/xl_u"] = (L, 1, n_q * d_k)
        shapes[p + "xl_bias_producer/xl_v"] = (L, 1, n_q * d_k)
        shapes[p + "quantizer/c_sum"] = (L, 1, n_kv, S, d_k)
        shapes[p + "quantizer/c_count"] = (L, 1, n_kv, S)
        shapes[p + "res_proj/kernel"] = (L, 1, n_q * d_v, D)
    if d_ff:
        shapes["stack/MultiLayerPerceptron_0/Dense_0/kernel"] = (L, 1, D, d_ff)
        shapes["stack/MultiLayerPerceptron_0/Dense_1/kernel"] = (L, 1, d_ff, D)
    return shapes


def check_tensors(config, arrays):
    """Raises StackedError for a missing, misshapen or unexpected tensor."""
    shapes = expected_tensors(config)
    problems = []
    for name, shape in shapes.items():
        if name not in arrays:
            problems.append("missing parameter %s (shape %s)" % (name, list(shape)))
        elif tuple(arrays[name].shape) != shape:
            problems.append("parameter %s has shape %s, the config needs %s" %
                            (name, list(arrays[name].shape), list(shape)))
    for name in sorted(arrays):
        if name not in shapes:
            problems.append("unexpected parameter %s for this config" % name)
    if problems:
        raise StackedError("the checkpoint does not match the config (head_type "
                           "%s):\n  %s" % (config["head_type"], "\n  ".join(problems)))


def find_step_checkpoint(path, fields, model_name):
    """The msgpack file of the newest step under an official work directory.

    Accepts WORKDIR (holding checkpoints/MODEL_NAME/state_N/), the
    checkpoints/MODEL_NAME directory, a state_N directory or its default/
    directory. The newest step is the highest N whose directory is complete
    (Orbax writes into a temporary name first), as the official do_restore
    takes CheckpointManager.latest_step(). Returns (file, note) or None when
    `path` is not laid out that way.
    """
    candidates = []
    if os.path.isdir(os.path.join(path, "checkpoints")):
        base = os.path.join(path, "checkpoints")
        names = sorted(os.listdir(base))
        if model_name is None and "dataset" in fields and "head_type" in fields:
            attn_type = fields.get("attn_type", "vq")
            model_name = "transformer_vq_%s_%s_%s" % (
                fields["dataset"], attn_type, fields["head_type"])
        if model_name is not None and model_name in names:
            candidates = [os.path.join(base, model_name)]
        elif len(names) == 1:
            candidates = [os.path.join(base, names[0])]
        else:
            raise StackedError(
                "%s holds runs %s; name one with --model_name" % (base, names))
    else:
        candidates = [path]
    directory = candidates[0]
    steps = []
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        match = re.fullmatch(r"state_(\d+)", name)
        if match and os.path.isdir(os.path.join(directory, name)):
            steps.append((int(match.group(1)), name))
    if steps:
        step, name = max(steps)
        directory = os.path.join(directory, name)
        note = "using %s (latest step %d in %s)" % (name, step, candidates[0])
    else:
        note = None
    for inner in (os.path.join(directory, "default", "checkpoint"),
                  os.path.join(directory, "checkpoint")):
        if os.path.isfile(inner):
            return inner, note
    return None
