// The one loader of a model directory: config.json, model.safetensors and
// the tokenizer the config names, each read once and checked against each
// other (n_vocab covers the tokenizer's pieces, the special ids agree).
#ifndef TVQ_SERVER_MODEL_MODEL_DIR_H_
#define TVQ_SERVER_MODEL_MODEL_DIR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/model/model_config.h"
#include "server/model/model_weights.h"
#include "server/text/tokenizer.h"

namespace tvq::runtime {

// A loaded model directory. Move-only; the weights and the tokenizer are
// never null in a value LoadModelDir returns.
struct LoadedModel {
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<Tokenizer> tokenizer;

  const ModelConfig& config() const { return weights->config(); }
  const std::string& directory() const { return weights->directory(); }
};

// Loads `directory`: config.json first, then the tokenizer (a SentencePiece
// file is checked: it exists, its special ids are the config's, n_vocab
// covers its pieces), then model.safetensors. Errors name the file and the
// key or tensor (see ModelWeights::Load).
absl::StatusOr<LoadedModel> LoadModelDir(const std::string& directory);

// Creates the tokenizer `config` names; SentencePiece files are read from
// `model_dir`. Errors name the file. LoadModelDir calls it.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const ModelConfig& config, const std::string& model_dir);

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_MODEL_MODEL_DIR_H_
