// A loaded model directory: its config and every weight, converted to
// float32 (exact for BF16 and F16), each available as a TensorView that
// carries its dtype and shape, with the dtype it was stored in.
#ifndef TVQ_SERVER_MODEL_MODEL_WEIGHTS_H_
#define TVQ_SERVER_MODEL_MODEL_WEIGHTS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/backend/tensor.h"
#include "server/model/model_config.h"

namespace tvq::runtime {

class ModelWeights {
 public:
  // Loads `model_dir`/config.json and `model_dir`/model.safetensors
  // (memory-mapped), validating everything against spec §4: config keys and
  // types, every tensor's presence, shape and dtype (F32, BF16, F16), no
  // unexpected tensors, header and data offsets within the file and not
  // overlapping, finite values. Errors name the file and the key or tensor.
  // The tokenizer is not looked at: model_dir.h's LoadModelDir loads config,
  // tokenizer and weights together and checks them against each other.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Load(
      const std::string& model_dir);
  // Reads and validates `model_dir`/config.json only.
  static absl::StatusOr<ModelConfig> LoadConfig(const std::string& model_dir);
  // Loads `model_dir`/model.safetensors against an already loaded `config`
  // (LoadConfig of the same directory).
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Load(
      const std::string& model_dir, const ModelConfig& config);

  ModelWeights(const ModelWeights&) = delete;
  ModelWeights& operator=(const ModelWeights&) = delete;
  ~ModelWeights();

  const ModelConfig& config() const { return config_; }
  const std::string& directory() const { return directory_; }
  // Path of the tokenizer model file (SentencePiece), empty for bytes.
  std::string TokenizerPath() const;
  // Stored dtype of the weights: "F32", "BF16", "F16" or "mixed".
  const std::string& stored_dtype() const { return stored_dtype_; }
  // Total number of parameters.
  int64_t num_parameters() const;

  // Float32 values of a tensor (row-major), empty when absent.
  std::span<const float> Tensor(std::string_view name) const;
  // The tensor as a host view (dtype, spec §4 shape, contiguous) of the
  // values the backend gets: today always the F32 conversion, so numbers
  // are exact; an empty view when absent.
  TensorView View(std::string_view name) const;
  // The dtype the tensor was stored in (F32 for FromTensors); kF32 when
  // absent.
  DType StoredDType(std::string_view name) const;

  // Builds weights from in-memory tensors (tests, converters). Validates as
  // Load does.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> FromTensors(
      const ModelConfig& config,
      std::map<std::string, std::vector<float>> tensors);

 private:
  ModelWeights() = default;
  struct Storage;

  ModelConfig config_;
  std::string directory_;
  std::string stored_dtype_ = "F32";
  std::unique_ptr<Storage> storage_;
  struct StoredTensor {
    std::span<const float> values;  // float32
    std::vector<int64_t> shape;     // spec §4, empty = scalar
    DType stored_dtype = DType::kF32;
  };
  std::map<std::string, StoredTensor, std::less<>> tensors_;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_MODEL_MODEL_WEIGHTS_H_
