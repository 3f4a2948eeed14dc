#include "server/model/model_dir.h"

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/base/status_macros.h"
#include "server/base/str_cat.h"
#include "server/text/byte_tokenizer.h"
#include "server/text/sentencepiece_tokenizer.h"

namespace tvq::runtime {
namespace {

// The model's special ids must be the ones config.json declares, where the
// SentencePiece model defines them.
absl::Status CheckSpecialId(const SentencePieceTokenizer& tokenizer,
                            std::string_view name, int tokenizer_id,
                            int config_id) {
  if (tokenizer_id >= 0 && tokenizer_id != config_id) {
    return absl::InvalidArgumentError(StrCat(
        tokenizer.path(), ": the SentencePiece model's ", name, " is ",
        tokenizer_id, " but config.json says \"", name, "\": ", config_id));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const ModelConfig& config, const std::string& model_dir) {
  switch (config.tokenizer_kind) {
    case TokenizerKind::kByte:
      return std::make_unique<ByteTokenizer>();
    case TokenizerKind::kSentencePiece:
      break;
  }
  if (config.tokenizer_file.empty()) {
    return absl::InvalidArgumentError(
        "config.json: \"tokenizer.file\" must name the SentencePiece model");
  }
  const std::string path = model_dir.empty()
                               ? config.tokenizer_file
                               : StrCat(model_dir, "/", config.tokenizer_file);
  TVQ_ASSIGN_OR_RETURN(std::unique_ptr<SentencePieceTokenizer> tokenizer,
                       SentencePieceTokenizer::Load(path));
  if (tokenizer->vocab_size() > config.n_vocab) {
    return absl::InvalidArgumentError(
        StrCat("config.json: \"n_vocab\" is ", config.n_vocab, " but ", path,
               " has ", tokenizer->vocab_size(),
               " pieces; n_vocab must be at least the number of pieces"));
  }
  TVQ_RETURN_IF_ERROR(
      CheckSpecialId(*tokenizer, "eos_id", tokenizer->eos_id(), config.eos_id));
  TVQ_RETURN_IF_ERROR(
      CheckSpecialId(*tokenizer, "pad_id", tokenizer->pad_id(), config.pad_id));
  TVQ_RETURN_IF_ERROR(
      CheckSpecialId(*tokenizer, "unk_id", tokenizer->unk_id(), config.unk_id));
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

absl::StatusOr<LoadedModel> LoadModelDir(const std::string& directory) {
  TVQ_ASSIGN_OR_RETURN(const ModelConfig config,
                       ModelWeights::LoadConfig(directory));
  LoadedModel model;
  TVQ_ASSIGN_OR_RETURN(model.tokenizer, LoadTokenizer(config, directory));
  TVQ_ASSIGN_OR_RETURN(model.weights, ModelWeights::Load(directory, config));
  return model;
}

}  // namespace tvq::runtime
