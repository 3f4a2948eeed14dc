// The kinds of tokenizer a model can name (config.json "tokenizer.kind") and
// the size of the byte vocabulary (spec §1). Plain constants with no
// dependencies, so that both the model config (model/) and the tokenizers
// (text/) can use them without text/ depending on model/.
#ifndef TVQ_SERVER_TEXT_TOKENIZER_KIND_H_
#define TVQ_SERVER_TEXT_TOKENIZER_KIND_H_

namespace tvq::runtime {

enum class TokenizerKind { kByte, kSentencePiece };

// Ids the byte tokenizer produces: three specials (0 pad, 1 eos, 2 unk) and
// 256 bytes. A byte model's n_vocab must be at least this.
inline constexpr int kByteVocabSize = 259;

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_TEXT_TOKENIZER_KIND_H_
