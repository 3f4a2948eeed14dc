"""Byte-level text data for training: documents, splits, batches.

Token ids follow the byte vocabulary of spec §1: 0 pad, 1 eos, 2 unk,
byte b -> b + 3. A document is fed as [eos] + its UTF-8 bytes, the way the
server feeds a prompt; documents are concatenated into one stream.

`load_fortune_documents` reads a fortune(6) database directory (Debian's
`fortunes`/`fortunes-min` packages: /usr/share/games/fortunes): each file
holds cookies separated by lines of a single "%"; `.dat` index files and the
`.u8` links are skipped. Overstriking (char, backspace) is removed, trailing
whitespace stripped, empty and duplicate cookies dropped.
"""

import os
import re
import zlib

import numpy as np

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
BYTE_OFFSET = 3

_OVERSTRIKE = re.compile(r".\x08", re.DOTALL)


def encode(text):
    """str -> numpy int64 token ids (no eos)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + BYTE_OFFSET


def decode(ids):
    """Token ids -> str; eos becomes a newline-separated marker, pad/unk dropped."""
    out = bytearray()
    for token in ids:
        token = int(token)
        if token >= BYTE_OFFSET:
            out.append(token - BYTE_OFFSET)
        elif token == EOS_ID:
            out.extend(b"\n<eos>\n")
    return out.decode("utf-8", errors="replace")


def load_fortune_documents(directory, skip=("ascii-art",)):
    """Returns [(source file, cookie text)] in a fixed order."""
    documents, seen = [], set()
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if (name.endswith(".dat") or name.endswith(".u8") or name in skip or
                os.path.islink(path) or not os.path.isfile(path)):
            continue
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", errors="replace")
        for cookie in re.split(r"^%\n", text, flags=re.MULTILINE):
            cookie = _OVERSTRIKE.sub("", cookie).rstrip()
            if cookie.strip() and cookie not in seen:
                seen.add(cookie)
                documents.append((name, cookie))
    return documents


_KJV_HEADING = re.compile(r"^(\S.*) (\d+)$")
_KJV_VERSE = re.compile(r"^\s+(\d+) (.*)$")


def load_kjv_documents(path):
    """Returns [("kjv", chapter text)] from a dump of the King James Version.

    The dump is what the `bible` program of Debian's `bible-kjv` package
    prints for the whole text (data from `bible-kjv-text`, public domain):

        bible -m 8192 "Genesis1:1-Revelation22:21" > kjv.txt

    i.e. a heading line "Book N" per chapter, then verses "  V text" wrapped
    at 80 columns. One document per chapter: "Book N" then one line per
    verse, "V text" with the wrapping undone.
    """
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    documents, heading, verses = [], None, []

    def flush():
        if heading is not None and verses:
            documents.append(("kjv", heading + "\n" + "\n".join(verses)))

    for line in lines:
        if not line.strip():
            continue
        verse = _KJV_VERSE.match(line)
        if verse:
            verses.append("%s %s" % (verse.group(1), verse.group(2).strip()))
        elif _KJV_HEADING.match(line) and not line.startswith(" "):
            if verses and heading is not None and not _is_new_chapter(line, heading):
                verses[-1] += " " + line.strip()
                continue
            flush()
            heading, verses = line.strip(), []
        elif verses:
            verses[-1] += " " + line.strip()          # wrapped verse
        else:
            raise ValueError("%s: unexpected line before the first verse: %r" %
                             (path, line))
    flush()
    if not documents:
        raise ValueError("%s holds no chapter of the bible program's output" % path)
    return documents


def _is_new_chapter(line, heading):
    """A wrapped verse line can end in a number ("... in the year 30");
    a real heading names the same book with the next chapter number, or
    chapter 1 of another book."""
    book, number = _KJV_HEADING.match(line).groups()
    old_book, old_number = _KJV_HEADING.match(heading).groups()
    return ((book == old_book and int(number) == int(old_number) + 1) or
            (book != old_book and number == "1"))


def split_documents(documents, validation_every=20):
    """Deterministic split by a hash of the text: ~1/validation_every held out."""
    train, validation = [], []
    for source, text in documents:
        bucket = zlib.crc32(text.encode("utf-8")) % validation_every
        (validation if bucket == 0 else train).append((source, text))
    return train, validation


class DocumentStream:
    """Training batches: sequences that start at a document boundary (eos).

    All documents are concatenated as [eos] + bytes in a seeded random order;
    a sequence of `length + 1` tokens starts at a random eos, so position 0
    of every training sequence is an eos, as at inference.
    """

    def __init__(self, texts, seed):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(texts))
        pieces, starts, offset = [], [], 0
        for index in order:
            ids = encode(texts[index])
            starts.append(offset)
            pieces.append(np.concatenate([[EOS_ID], ids]))
            offset += len(ids) + 1
        self.tokens = np.concatenate(pieces)
        self.starts = np.array(starts)
        self.rng = rng

    def __len__(self):
        return len(self.tokens)

    def batch(self, batch_size, length):
        usable = self.starts[self.starts + length + 1 <= len(self.tokens)]
        chosen = self.rng.choice(usable, size=batch_size)
        return np.stack([self.tokens[s:s + length + 1] for s in chosen])


def document_batches(texts, batch_size):
    """Yields (inputs [B, T], targets [B, T], mask [B, T]) for per-document
    scoring: inputs = [eos] + bytes[:-1], targets = bytes, padded with pad.

    Documents are sorted by length so the padding stays small; empty ones
    are skipped (they have no byte to predict).
    """
    encoded = sorted((ids for ids in map(encode, texts) if len(ids)), key=len)
    for begin in range(0, len(encoded), batch_size):
        group = encoded[begin:begin + batch_size]
        width = max(len(ids) for ids in group)
        inputs = np.full((len(group), width), PAD_ID, dtype=np.int64)
        targets = np.full((len(group), width), PAD_ID, dtype=np.int64)
        mask = np.zeros((len(group), width), dtype=np.float64)
        for row, ids in enumerate(group):
            inputs[row, 0] = EOS_ID
            inputs[row, 1:len(ids)] = ids[:-1]
            targets[row, :len(ids)] = ids
            mask[row, :len(ids)] = 1.0
        yield inputs, targets, mask
