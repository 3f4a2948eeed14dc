"""Golden vectors of the optimized-branch family, made by the official code itself.

    VENV/bin/python tools/make_optimized_golden.py --official CHECKOUT \\
        --out tests/data/golden-optimized

CHECKOUT is a checkout of the official repository's `optimized` branch
(transformer-vq/transformer_vq, commit 293e3b1); its Flax modules are
imported from CHECKOUT/src and run on the CPU in float32 (matmul precision
highest). The official code never enters this repository: only the numbers
it computes do. The environment needs jax/jaxlib 0.4.13, flax 0.6.11,
orbax-checkpoint 0.1.7, chex, optax 0.1.5, ml_collections and numpy < 2
(see docs/models.md, "Golden vectors of the optimized family").

For each head type (shga, mqa, mha) a small random model is initialised
with the official `Transformer.init`, every parameter is then perturbed
(the official init leaves xl_u, xl_v, biases and pos_embed/scale at zero and
c_count at one), and one random byte sequence starting with eos is run
through `Transformer.apply` (is_train=False, the official blockwise
training/evaluation path, reduction_type "serial"). Written per model NAME:

- NAME/checkpoint/: the official train state {step, params, opt_state}
  saved through the official launcher's own checkpointing (an Orbax
  CheckpointManager with PyTreeCheckpointHandler and step_prefix "state",
  as scripts/launch.py's get_checkpoint_manager/do_save), under
  checkpoints/MODEL_NAME/state_N/ (two steps; the later holds the params);
- NAME/launch.txt: the official launch command line for that run;
- NAME/golden.safetensors: tokens I32 [T] (tokens[0] = eos), logprobs
  F32 [T, n_vocab] (row t = log p(next | tokens[0..t]), the official
  logits through a float64 log-softmax, rounded to float32), codes
  I32 [n_attention_sublayers, n_kv, T] (the VQ shortcodes of every
  attention sublayer in execution order: layer 0 VQAttention_0,
  VQAttention_1 (shga), layer 1 ...).

The model directory is made from the checkpoint with
tools/convert_flax_checkpoint.py (see tests/data/golden-optimized/README.md).
"""

import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np

CONFIGS = {
    # d_model, d_k, n_code, n_layer, block_len, pe_abs, e_tie, e_preln, e_scale
    "shga": dict(d_model=32, d_k=8, n_code=16, n_layer=2, block_len=4,
                 pe_abs=True, e_tie=False, e_preln=True, e_scale=0.5),
    "mqa": dict(d_model=32, d_k=8, n_code=16, n_layer=2, block_len=4,
                pe_abs=False, e_tie=True, e_preln=True, e_scale=0.75),
    "mha": dict(d_model=32, d_k=8, n_code=16, n_layer=2, block_len=4,
                pe_abs=True, e_tie=False, e_preln=False, e_scale=0.25),
}
SEQUENCE_LEN = 40  # 10 blocks of 4: the cache holds keys from block 2 on
N_VOCAB = 259


def write_golden(path, tensors, metadata):
    """A safetensors file of I32/F32 arrays (names sorted)."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        dtype = {"int32": "I32", "float32": "F32"}[array.dtype.name]
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for raw in blobs:
            handle.write(raw)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True,
                        help="checkout of the official optimized branch")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(os.path.abspath(args.official), "src"))

    import jax
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_default_matmul_precision", "highest")
    import jax.numpy as jnp
    import flax
    import orbax.checkpoint as ocp
    from etils import epath
    from flax.training import orbax_utils
    from flax.training import train_state as train_utils
    import optax
    from transformer_vq.nn.model import Transformer
    from transformer_vq.nn.types import TransformerConfig
    from transformer_vq.nn.vq import VectorQuantizer

    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for index, (head_type, arch) in enumerate(sorted(CONFIGS.items())):
        name = "optimized-" + head_type
        settings = dict(
            param_dtype=jnp.float32, dtype=jnp.float32, n_device=1,
            global_batch_size=1, sequence_len=SEQUENCE_LEN, attn_type="vq",
            head_type=head_type, reduction_type="serial", n_vocab=N_VOCAB,
            pe_lam=10000, p_dropsin=0.0, p_dropres=0.0, p_droplyr=0.0,
            c_beta=0.0001, c_gamma=0.99, is_train=False, **arch)
        config = TransformerConfig.create(**settings)
        model = Transformer(config)
        key = jax.random.PRNGKey(args.seed + index)
        tokens = np.concatenate([[1], rng.integers(3, N_VOCAB, SEQUENCE_LEN - 1)])
        tokens = tokens.astype(np.int32)
        params = model.init(dict(params=key, ephemeral=key, timeless=key),
                            inputs=jnp.asarray(tokens[None]))["params"]
        params = flax.core.unfreeze(params)

        def perturb(path, leaf):
            leaf = np.asarray(leaf, dtype=np.float32)
            if path[-1] == "c_count":
                return rng.uniform(0.5, 3.0, leaf.shape).astype(np.float32)
            if path[-1] == "c_sum":
                return (leaf + rng.normal(0, 0.3, leaf.shape)).astype(np.float32)
            if path[-1] == "scale":
                return np.asarray(0.7, np.float32)
            return (leaf + rng.normal(0, 0.2, leaf.shape)).astype(np.float32)

        params = flax.traverse_util.unflatten_dict({
            path: jnp.asarray(perturb(path, leaf))
            for path, leaf in flax.traverse_util.flatten_dict(params).items()})

        outputs, state = model.apply(
            {"params": params}, inputs=jnp.asarray(tokens[None]),
            rngs=dict(ephemeral=key, timeless=key),
            capture_intermediates=lambda module, method:
                isinstance(module, VectorQuantizer) and method == "__call__",
            mutable=["intermediates"])
        logits = np.asarray(outputs["logits"][0], dtype=np.float64)
        logprobs = logits - np.log(np.sum(np.exp(
            logits - logits.max(-1, keepdims=True)), -1, keepdims=True)) - \
            logits.max(-1, keepdims=True)
        next_logprobs = logprobs[np.arange(SEQUENCE_LEN - 1), tokens[1:]]


        # Codes: intermediates of every quantizer, stacked by remat_scan as
        # [n_layer, 1, batch, n_kv, R, C]; sublayer order is layer-major,
        # VQAttention_0 before VQAttention_1.
        flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(state["intermediates"]))
        per_sublayer = {}
        for path, value in flat.items():
            output = value[0] if isinstance(value, tuple) else value
            codes = np.asarray(output["shortcodes"])
            sublayer = [p for p in path if p.startswith("VQAttention_")][0]
            per_sublayer[sublayer] = codes
        n_layer = arch["n_layer"]
        code_rows = []
        for layer in range(n_layer):
            for sublayer in sorted(per_sublayer):
                codes = per_sublayer[sublayer][layer, 0, 0]  # [n_kv, R, C]
                code_rows.append(codes.reshape(codes.shape[0], -1))
        codes = np.stack(code_rows).astype(np.int32)

        target = os.path.join(args.out, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.makedirs(target)
        write_golden(os.path.join(target, "golden.safetensors"), {
            "tokens": tokens, "logprobs": logprobs.astype(np.float32),
            "codes": codes}, {
            "config_name": name, "head_type": head_type,
            "T": SEQUENCE_LEN, "n_vocab": N_VOCAB,
            "made_by": "tools/make_optimized_golden.py: official optimized "
                       "branch 293e3b1, Transformer.apply (is_train=False), "
                       "jax %s, flax %s, CPU, float32, matmul precision "
                       "highest" % (jax.__version__, flax.__version__),
            "arch": json.dumps(arch, sort_keys=True)})

        # The official launcher's checkpointing, as scripts/launch.py does it.
        tx = optax.adamw(1e-3)
        model_name = "transformer_vq_enwik8_vq_%s" % head_type
        workdir = os.path.join(target, "checkpoint")
        manager = ocp.CheckpointManager(
            directory=epath.Path(workdir) / "checkpoints" / model_name,
            checkpointers=ocp.Checkpointer(ocp.PyTreeCheckpointHandler()),
            options=ocp.CheckpointManagerOptions(
                create=True, max_to_keep=5, save_interval_steps=1,
                step_prefix="state"))
        for step, scale in ((100, 0.5), (200, 1.0)):
            saved = jax.tree_util.tree_map(lambda a: a * scale, params)
            train_state = train_utils.TrainState.create(
                apply_fn=None, params=saved, tx=tx)
            train_state = train_state.replace(step=step)
            manager.save(step=step, items=train_state, save_kwargs=dict(
                save_args=orbax_utils.save_args_from_target(train_state)))
        flags = ["--config=scripts/config_enwik8.py", "--multihost=False",
                 "--workdir=WORKDIR", "--mode=train",
                 "--config.head_type=%s" % head_type,
                 "--config.sequence_len=%d" % SEQUENCE_LEN,
                 "--config.n_vocab=%d" % N_VOCAB, "--config.pe_lam=10000",
                 "--config.dtype=float32"]
        for key_name, value in sorted(arch.items()):
            if isinstance(value, bool):
                value = str(value)
            flags.append("--config.%s=%s" % (key_name, value))
        with open(os.path.join(target, "launch.txt"), "w") as handle:
            handle.write("python3 scripts/launch.py " + " ".join(flags) + "\n")
        shapes = {"/".join(path): list(np.shape(leaf)) for path, leaf in
                  flax.traverse_util.flatten_dict(params).items()}
        with open(os.path.join(target, "param_shapes.json"), "w") as handle:
            json.dump(shapes, handle, indent=1, sort_keys=True)
        print("%s: %d params, mean logprob %.4f, codes %s" % (
            name, sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(params)),
            float(next_logprobs.mean()), list(codes.shape)))


if __name__ == "__main__":
    main()
