#!/usr/bin/python3
"""Writes byte_fallback.model: a small SentencePiece BPE model with byte
fallback (characters outside its vocabulary become <0xNN> byte pieces), for
the incremental detokenizer tests. Ids follow spec §1: pad 0, eos 1, unk 2,
no bos. Run from this directory with Debian's python3-sentencepiece 0.1.97:
    /usr/bin/python3 make_byte_fallback_model.py
"""
import io

import sentencepiece as spm

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A linear-time transformer keeps a constant-size state per sequence.",
    "Every key is a codeword, so older keys collapse into counts and means.",
    "Streaming text must never split a character in half.",
    "Tokenizers map text to ids and ids back to text.",
    "She sells sea shells by the sea shore, and the shells she sells are sure.",
    "Numbers like 12345 and 67890 appear in the text too.",
]


def main():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 20),
        model_writer=model,
        model_type="bpe",
        vocab_size=360,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    with open("byte_fallback.model", "wb") as output:
        output.write(model.getvalue())


if __name__ == "__main__":
    main()
