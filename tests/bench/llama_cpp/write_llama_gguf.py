#!/usr/bin/env python3
"""Writes a random-weight llama GGUF whose widths match a Transformer-VQ model.

Used by compare_llama_cpp.py (issue 16): llama.cpp's own gguf-py (from the
checkout: PYTHONPATH=<llama.cpp>/gguf-py) writes the file, so the format is
the one that checkout reads.

The match, for engine_bench's model (d_model 256, d_k 128, d_v 512, 1 head,
4 layers of 2 attention sublayers, vocabulary 259):
  - d_model 256, 4 blocks, vocabulary 259 (the byte vocabulary as an SPM
    vocabulary of <unk> <s> </s> and the 256 byte tokens);
  - attention with head_dim = d_k = 128: 2 heads (2 x 128 = d_model), no GQA;
  - the FFN width chosen so that a block has the parameters of two
    Transformer-VQ sublayers: 2 (D dk + D (dk + 2 dv) + dv D) = 917,504 =
    4 D^2 (attention) + 3 D F  ->  F = 853.3, rounded up to 864 (27 x 32).
Weights ~ N(0, 0.02), norms 1; f32 or bf16 (norms stay f32, as llama.cpp's
converter writes them).

  write_llama_gguf.py --out model.gguf [--dtype f32|bf16] [--seed N]
"""
import argparse
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("write_llama_gguf.py: gguf not importable: set PYTHONPATH=<llama.cpp>/gguf-py")

D_MODEL = 256
N_BLOCK = 4
HEAD_DIM = 128
N_HEAD = D_MODEL // HEAD_DIM
FFN = 864
N_VOCAB = 259
CONTEXT = 131072


def parameter_count():
    per_block = 4 * D_MODEL * D_MODEL + 3 * D_MODEL * FFN + 2 * D_MODEL
    return N_BLOCK * per_block + 2 * N_VOCAB * D_MODEL + D_MODEL


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    writer = gguf.GGUFWriter(args.out, arch="llama")
    writer.add_name(f"tvq-matched-llama-{args.dtype}")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(D_MODEL)
    writer.add_block_count(N_BLOCK)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(N_VOCAB)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if args.dtype == "f32"
                         else gguf.LlamaFileType.MOSTLY_BF16)

    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{b:02X}>".encode() for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + \
        [gguf.TokenType.BYTE] * 256
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * N_VOCAB)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)

    def matrix(name, rows, cols):
        # numpy shape (rows, cols) = GGUF ne (cols, rows): rows outputs of
        # `cols` inputs each, as llama.cpp stores a linear layer.
        data = rng.normal(0.0, 0.02, size=(rows, cols)).astype(np.float32)
        if args.dtype == "bf16":
            # quantize() returns the bytes; the writer derives the element
            # shape from their byte shape and raw_dtype (a raw_shape here
            # would be read as a byte shape and halve every row).
            writer.add_tensor(name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16),
                              raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor(name, data)

    def norm(name):
        writer.add_tensor(name, np.ones(D_MODEL, dtype=np.float32))

    matrix("token_embd.weight", N_VOCAB, D_MODEL)
    for block in range(N_BLOCK):
        prefix = f"blk.{block}."
        norm(prefix + "attn_norm.weight")
        matrix(prefix + "attn_q.weight", N_HEAD * HEAD_DIM, D_MODEL)
        matrix(prefix + "attn_k.weight", N_HEAD * HEAD_DIM, D_MODEL)
        matrix(prefix + "attn_v.weight", N_HEAD * HEAD_DIM, D_MODEL)
        matrix(prefix + "attn_output.weight", D_MODEL, N_HEAD * HEAD_DIM)
        norm(prefix + "ffn_norm.weight")
        matrix(prefix + "ffn_gate.weight", FFN, D_MODEL)
        matrix(prefix + "ffn_up.weight", FFN, D_MODEL)
        matrix(prefix + "ffn_down.weight", D_MODEL, FFN)
    norm("output_norm.weight")
    matrix("output.weight", N_VOCAB, D_MODEL)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"write_llama_gguf: {args.out}: llama, d_model {D_MODEL}, {N_BLOCK} blocks, "
          f"{N_HEAD} heads of {HEAD_DIM}, FFN {FFN}, vocab {N_VOCAB}, {args.dtype}, "
          f"{parameter_count():,} parameters")


if __name__ == "__main__":
    main()
