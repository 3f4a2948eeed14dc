#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/).

The seeds are committed; this script says how they were made and makes them
again (it overwrites only the files it names). Run from the repository root
with the generated Python stubs on the path:

    PYTHONPATH=build/dev/client/python /usr/bin/python3 tests/fuzz/make_seeds.py

(Debian's python3 with python3-protobuf; the model-dir seeds are the smallest
models the loader accepts, so that libFuzzer's inputs stay small.)
"""
import json
import os
import struct
import sys

from tvq.v1 import tvq_pb2

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as out:
        out.write(data)


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, raw bytes)] -> safetensors bytes."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    payload = b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        payload += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + payload


def f32(count, value=0.25):
    return struct.pack("<%df" % count, *([value] * count))


# The smallest byte-tokenizer model the loader accepts (tied embeddings).
TINY_CONFIG = {
    "format": "transformer-vq", "format_version": 1,
    "d_model": 2, "d_k": 2, "d_v": 2, "n_head": 1, "n_code": 2,
    "n_layer": 1, "n_vocab": 259, "block_len": 2, "mem_len": 2,
    "agg_cache": True, "pe_abs": False, "pe_lam": 100000.0,
    "e_tie": True, "e_preln": False, "e_scale": 1.0,
    "eos_id": 1, "pad_id": 0, "unk_id": 2, "tokenizer": {"kind": "byte"},
}


def tiny_tensors(config):
    d, v, h = config["d_model"], config["n_vocab"], config["n_head"]
    dk, dv, nc = config["d_k"], config["d_v"], config["n_code"]
    specs = [("token_embedder/embs", [v, d]), ("token_embedder/bias_out", [v])]
    if config["pe_abs"]:
        specs.append(("position_embedder/scale", []))
    if config["e_preln"]:
        specs += [("out_ln/g", [d]), ("out_ln/b", [d])]
    if not config["e_tie"]:
        specs += [("out_proj/kernel", [d, v]), ("out_proj/bias", [v])]
    for sublayer in range(2 * config["n_layer"]):
        p = "transformer_layers_%d/scanned_attn%d/" % (sublayer // 2,
                                                     sublayer % 2 + 1)
        specs += [(p + "input_ln/g", [d]), (p + "input_ln/b", [d]),
                  (p + "q_proj/kernel", [d, h * dk]),
                  (p + "kvg_proj/kernel", [d, h * (dk + 2 * dv)]),
                  (p + "r_proj/kernel", [d, h * dk]),
                  (p + "res_proj/kernel", [h * dv, d]),
                  (p + "u", [h * dk]), (p + "v", [h * dk]),
                  (p + "quantizer/c_sum", [h, nc, dk]),
                  (p + "quantizer/c_count", [h, nc])]
    tensors = []
    for name, shape in specs:
        count = 1
        for dim in shape:
            count *= dim
        tensors.append((name, "F32", shape, f32(count, 1.0)))
    return tensors


def model_dir_seeds():
    separator = b"\n--model.safetensors--\n"
    variants = {
        "tiny_tied": TINY_CONFIG,
        "tiny_untied_preln_abs": dict(TINY_CONFIG, e_tie=False, e_preln=True,
                                      pe_abs=True, agg_cache=False),
    }
    for name, config in variants.items():
        text = json.dumps(config, indent=1).encode()
        write("model_dir", name, text + separator +
              safetensors(tiny_tensors(config)))
        write("model_config", name + ".json", text)
    write("model_dir", "config_only", json.dumps(TINY_CONFIG))
    write("model_config", "sentencepiece.json",
          json.dumps(dict(TINY_CONFIG, n_vocab=1000,
                          tokenizer={"kind": "sentencepiece",
                                     "file": "tokenizer.model"})))


def safetensors_seeds():
    write("safetensors_header", "two_tensors", safetensors(
        [("a", "F32", [2, 3], f32(6)), ("b", "BF16", [4], b"\x80\x3f" * 4)],
        metadata={"format": "pt"}))
    write("safetensors_header", "scalar_f16",
          safetensors([("s", "F16", [], b"\x00\x3c")]))
    write("safetensors_header", "empty", safetensors([]))
    write("safetensors_header", "int_dtypes", safetensors(
        [("i", "I32", [2], struct.pack("<2i", 1, 2)),
         ("u", "U8", [3], b"\x01\x02\x03"), ("z", "F32", [0], b"")]))


def request_seeds():
    kinds = [tvq_pb2.GenerateRequest, tvq_pb2.ScoreRequest,
             tvq_pb2.TokenizeRequest, tvq_pb2.DetokenizeRequest,
             tvq_pb2.CreateSessionRequest, tvq_pb2.AppendToSessionRequest,
             tvq_pb2.ForkSessionRequest]

    def seed(name, message):
        write("request_validation", name,
              bytes([kinds.index(type(message))]) +
              message.SerializeToString())

    seed("generate_text", tvq_pb2.GenerateRequest(
        text="Hello", temperature=0.7, top_k=5, top_p=0.9, min_p=0.1,
        repetition_penalty=1.1, presence_penalty=0.5, frequency_penalty=0.5,
        seed=3, max_new_tokens=8, stop=["\n", "end"], stop_token_ids=[1],
        logprobs=True, top_logprobs=3, request_id="r-1"))
    seed("generate_ids", tvq_pb2.GenerateRequest(
        token_ids=tvq_pb2.TokenIds(ids=[5, 6, 7]), no_eos_prefix=True,
        ignore_eos=True, session_id="s1"))
    seed("score_text", tvq_pb2.ScoreRequest(text="abc", top_logprobs=2,
                                            request_id="x"))
    seed("score_ids", tvq_pb2.ScoreRequest(
        token_ids=tvq_pb2.TokenIds(ids=[1, 70, 80]), no_eos_prefix=True))
    seed("tokenize", tvq_pb2.TokenizeRequest(text="h\u00e9llo"))
    seed("detokenize", tvq_pb2.DetokenizeRequest(token_ids=[3, 200, 258]))
    seed("create_session", tvq_pb2.CreateSessionRequest(
        text="prompt", session_id="abc", ttl_seconds=60, pinned=True))
    seed("append", tvq_pb2.AppendToSessionRequest(
        session_id="abc", token_ids=tvq_pb2.TokenIds(ids=[9, 10])))
    seed("fork", tvq_pb2.ForkSessionRequest(session_id="abc",
                                            new_session_id="def"))


def openai_seeds():
    def seed(name, endpoint, body):
        write("openai_request", name, bytes([endpoint]) +
              json.dumps(body).encode())

    seed("completion", 0, {
        "model": "tiny", "prompt": "Hello", "max_tokens": 8,
        "temperature": 0.5, "top_p": 0.9, "n": 2, "stop": ["\n"],
        "stream": True, "stream_options": {"include_usage": True},
        "logprobs": 2, "echo": True, "seed": 4, "presence_penalty": 0.1,
        "frequency_penalty": 0.1, "user": "u"})
    seed("completion_ids", 0, {"prompt": [5, 6, 7], "max_tokens": 0,
                               "echo": True, "logprobs": 0})
    seed("chat", 1, {
        "model": "tiny", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text",
                                               "text": "hello"}]}],
        "max_completion_tokens": 4, "logprobs": True, "top_logprobs": 2,
        "stop": "\n", "n": 1})
    seed("responses", 2, {
        "model": "tiny", "input": [{"role": "user", "content": "hi"}],
        "instructions": "short", "max_output_tokens": 5, "store": False,
        "temperature": 0.2, "metadata": {"k": "v"}})
    seed("responses_text", 2, {"input": "hello", "stream": True,
                               "previous_response_id": "resp_1"})


def text_seeds():
    write("tokenizer", "ascii", "Hello, world!" + "\x05\x00\x06\x00" * 4)
    write("tokenizer", "utf8", "h\u00e9llo \u4e16\u754c \U0001f600" +
          "\xc3\x00\xa9\x00\xe4\x00\xb8\x00\x96\x00")
    write("tokenizer", "invalid", b"\xff\xfe\xc3(" + b"\xc6\x00\x01\x01")
    write("stop_matcher", "one_stop", b"\nU:\xffhello\xff wor\xffld\nU\xff: x")
    write("stop_matcher", "overlap",
          b"ab\xffabc\xffb\xffxxa\xffbab\xffc")
    write("stop_matcher", "utf8", "\u00e9\u00e9".encode() + b"\xff" +
          "x\u00e9".encode() + b"\xff\xc3" + b"\xff\xa9\u00e9")


def blob(position, pending, state, token_hash=0x1234):
    header = b"TVQSESS\0" + struct.pack(
        "<IIQQIIIIIIIiQQQQ", 1, 96, 0x1122334455667788, 0x99aabbccddeeff00,
        2, 1, 4, 4, 2, 259, 1, pending, position,
        position + (1 if pending >= 0 else 0), token_hash, len(state))
    assert len(header) == 96
    return header + state  # the fuzzer appends the CRC-32


def blob_seeds():
    write("session_blob", "empty", blob(0, -1, b""))
    write("session_blob", "empty_pending", blob(0, 42, b""))
    write("session_blob", "state", blob(7, -1, bytes(range(64))))
    write("session_blob", "state_pending", blob(7, 258, b"\x01" * 64))


def main():
    model_dir_seeds()
    safetensors_seeds()
    request_seeds()
    openai_seeds()
    text_seeds()
    blob_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
