#include "server/model/model_weights.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_join.h"
#include "server/model/model_config.h"
#include "server/model/safetensors.h"
#include "server/base/status_macros.h"
#include "server/base/str_cat.h"

namespace tvq::runtime {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this loader reads it in "
              "place");

struct ModelWeights::Storage {
  // Kept while some tensor is served straight from the mapping.
  std::unique_ptr<SafetensorsFile> file;
  // Tensors converted to float32 (BF16, F16, unaligned F32) or handed in.
  std::vector<std::vector<float>> owned;
};

namespace {

constexpr size_t kMaxConfigBytes = 1 << 20;

std::string JoinPath(const std::string& directory, std::string_view name) {
  if (directory.empty()) return std::string(name);
  if (directory.back() == '/') return StrCat(directory, name);
  return StrCat(directory, "/", name);
}

std::string ShapeString(std::span<const int64_t> shape) {
  return StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t NumElements(std::span<const int64_t> shape) {
  int64_t count = 1;
  for (int64_t size : shape) count *= size;
  return count;
}

absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is then
  // refused as not a regular file); reads of regular files ignore it.
  const int descriptor =
      ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (descriptor < 0) {
    const int error = errno;
    if (error == ENOENT) {
      return absl::NotFoundError(StrCat(path, ": file not found"));
    }
    return absl::ErrnoToStatus(error, StrCat(path, ": cannot open"));
  }
  struct stat file_status;
  if (::fstat(descriptor, &file_status) != 0 || !S_ISREG(file_status.st_mode)) {
    ::close(descriptor);
    return absl::InvalidArgumentError(StrCat(path, ": is not a regular file"));
  }
  if (static_cast<uint64_t>(file_status.st_size) > kMaxConfigBytes) {
    ::close(descriptor);
    return absl::InvalidArgumentError(StrCat(
        path, ": ", file_status.st_size,
        " bytes is too large for a config (at most ", kMaxConfigBytes, ")"));
  }
  std::string text(static_cast<size_t>(file_status.st_size), '\0');
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t count =
        ::read(descriptor, text.data() + done, text.size() - done);
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0) {
      const int error = count < 0 ? errno : EIO;
      ::close(descriptor);
      return absl::ErrnoToStatus(error, StrCat(path, ": cannot read"));
    }
    done += static_cast<size_t>(count);
  }
  ::close(descriptor);
  return text;
}

float BFloat16ToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

float Float16ToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1Fu;
  const uint32_t mantissa = bits & 0x3FFu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float32.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) {  // Inf or NaN
    return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));
  }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) |
                              (mantissa << 13));
}

// Float32 values of a file tensor: a view into the mapping when the data is
// F32 and 4-byte aligned, else a converted copy appended to `owned`.
std::span<const float> ToFloat32(const SafetensorsTensor& tensor,
                                 std::vector<std::vector<float>>& owned,
                                 bool& uses_mapping) {
  const size_t count = static_cast<size_t>(tensor.num_elements);
  const std::byte* bytes = tensor.bytes.data();
  if (tensor.dtype == "F32" &&
      reinterpret_cast<uintptr_t>(bytes) % alignof(float) == 0) {
    uses_mapping = true;
    return {reinterpret_cast<const float*>(bytes), count};
  }
  std::vector<float>& values = owned.emplace_back(count);
  if (tensor.dtype == "F32") {
    if (count > 0) std::memcpy(values.data(), bytes, count * sizeof(float));
  } else {
    const bool is_bfloat16 = tensor.dtype == "BF16";
    for (size_t i = 0; i < count; ++i) {
      uint16_t bits;
      std::memcpy(&bits, bytes + 2 * i, sizeof(bits));
      values[i] = is_bfloat16 ? BFloat16ToFloat(bits) : Float16ToFloat(bits);
    }
  }
  return values;
}

absl::Status CheckFinite(std::string_view source, std::string_view name,
                         std::span<const float> values, absl::StatusCode code) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return absl::Status(code, StrCat(source, ": tensor \"", name,
                                       "\" has a non-finite value (",
                                       std::isnan(values[i]) ? "NaN"
                                       : values[i] > 0       ? "+Inf"
                                                             : "-Inf",
                                       ") at flat index ", i));
    }
  }
  return absl::OkStatus();
}

// Why a tensor the file has is not among the expected ones, when its name
// is one spec §4 knows.
std::string UnexpectedTensorHint(std::string_view name,
                                 const ModelConfig& config) {
  if (name.starts_with("out_proj/") && config.e_tie) {
    return " (e_tie is true: the head uses token_embedder/embs)";
  }
  if (name.starts_with("out_ln/") && !config.e_preln) {
    return " (e_preln is false)";
  }
  if (name == "position_embedder/scale" && !config.pe_abs) {
    return " (pe_abs is false)";
  }
  constexpr std::string_view kLayerPrefix = "transformer_layers_";
  if (name.starts_with(kLayerPrefix)) {
    const std::string_view rest = name.substr(kLayerPrefix.size());
    const std::string_view digits = rest.substr(0, rest.find('/'));
    int layer = 0;
    const auto [end, error] =
        std::from_chars(digits.data(), digits.data() + digits.size(), layer);
    if (error == std::errc() && end == digits.data() + digits.size() &&
        layer >= config.n_layer) {
      return StrCat(" (n_layer is ", config.n_layer, ")");
    }
  }
  return " (not part of the model spec §4 describes)";
}

}  // namespace

ModelWeights::~ModelWeights() = default;

absl::StatusOr<ModelConfig> ModelWeights::LoadConfig(
    const std::string& model_dir) {
  const std::string config_path = JoinPath(model_dir, "config.json");
  TVQ_ASSIGN_OR_RETURN(const std::string config_text,
                       ReadConfigFile(config_path));
  return ParseModelConfig(config_text, config_path);
}

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Load(
    const std::string& model_dir) {
  TVQ_ASSIGN_OR_RETURN(const ModelConfig config, LoadConfig(model_dir));
  return Load(model_dir, config);
}

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Load(
    const std::string& model_dir, const ModelConfig& config) {
  const std::string weights_path = JoinPath(model_dir, "model.safetensors");
  TVQ_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                       SafetensorsFile::Open(weights_path));

  std::unique_ptr<ModelWeights> weights(new ModelWeights());
  weights->config_ = config;
  weights->directory_ = model_dir;
  weights->storage_ = std::make_unique<Storage>();
  Storage& storage = *weights->storage_;

  const std::vector<TensorSpec> specs = ExpectedTensors(config);
  storage.owned.reserve(specs.size());
  std::set<std::string_view> expected_names;
  std::set<std::string> dtypes;
  bool uses_mapping = false;
  for (const TensorSpec& spec : specs) {
    expected_names.insert(spec.name);
    const SafetensorsTensor* tensor = file->Find(spec.name);
    if (tensor == nullptr) {
      return absl::InvalidArgumentError(
          StrCat(weights_path, ": missing tensor \"", spec.name, "\" (shape ",
                 ShapeString(spec.shape), ")"));
    }
    if (tensor->dtype != "F32" && tensor->dtype != "BF16" &&
        tensor->dtype != "F16") {
      return absl::InvalidArgumentError(
          StrCat(weights_path, ": tensor \"", spec.name, "\" has dtype ",
                 tensor->dtype, ", expected F32, BF16 or F16"));
    }
    if (tensor->shape != spec.shape) {
      return absl::InvalidArgumentError(StrCat(
          weights_path, ": tensor \"", spec.name, "\" has shape ",
          ShapeString(tensor->shape), ", expected ", ShapeString(spec.shape)));
    }
    dtypes.insert(tensor->dtype);
    const std::span<const float> values =
        ToFloat32(*tensor, storage.owned, uses_mapping);
    TVQ_RETURN_IF_ERROR(CheckFinite(weights_path, spec.name, values,
                                    absl::StatusCode::kDataLoss));
    weights->tensors_.emplace(
        spec.name, StoredTensor{values, spec.shape,
                                tensor->dtype == "BF16"  ? DType::kBF16
                                : tensor->dtype == "F16" ? DType::kF16
                                                         : DType::kF32});
  }
  for (const SafetensorsTensor& tensor : file->tensors()) {
    if (!expected_names.contains(tensor.name)) {
      return absl::InvalidArgumentError(
          StrCat(weights_path, ": unexpected tensor \"", tensor.name, "\"",
                 UnexpectedTensorHint(tensor.name, config)));
    }
  }

  if (dtypes.size() == 1) {
    weights->stored_dtype_ = *dtypes.begin();
  } else if (dtypes.size() > 1) {
    weights->stored_dtype_ = "mixed";
  }
  // Keep the mapping only while a tensor points into it.
  if (uses_mapping) storage.file = std::move(file);
  return weights;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::FromTensors(
    const ModelConfig& config,
    std::map<std::string, std::vector<float>> tensors) {
  constexpr std::string_view kSource = "in-memory model";
  TVQ_RETURN_IF_ERROR(ValidateModelConfig(config, kSource));

  std::unique_ptr<ModelWeights> weights(new ModelWeights());
  weights->config_ = config;
  weights->storage_ = std::make_unique<Storage>();
  Storage& storage = *weights->storage_;

  const std::vector<TensorSpec> specs = ExpectedTensors(config);
  storage.owned.reserve(specs.size());
  for (const TensorSpec& spec : specs) {
    auto it = tensors.find(spec.name);
    if (it == tensors.end()) {
      return absl::InvalidArgumentError(StrCat(kSource, ": missing tensor \"",
                                               spec.name, "\" (shape ",
                                               ShapeString(spec.shape), ")"));
    }
    const int64_t expected_count = NumElements(spec.shape);
    if (static_cast<int64_t>(it->second.size()) != expected_count) {
      return absl::InvalidArgumentError(
          StrCat(kSource, ": tensor \"", spec.name, "\" has ",
                 it->second.size(), " values, expected ", expected_count,
                 " (shape ", ShapeString(spec.shape), ")"));
    }
    TVQ_RETURN_IF_ERROR(CheckFinite(kSource, spec.name, it->second,
                                    absl::StatusCode::kInvalidArgument));
    std::vector<float>& values =
        storage.owned.emplace_back(std::move(it->second));
    weights->tensors_.emplace(
        spec.name,
        StoredTensor{std::span<const float>(values), spec.shape, DType::kF32});
    tensors.erase(it);
  }
  if (!tensors.empty()) {
    const std::string& name = tensors.begin()->first;
    return absl::InvalidArgumentError(
        StrCat(kSource, ": unexpected tensor \"", name, "\"",
               UnexpectedTensorHint(name, config)));
  }
  return weights;
}

std::string ModelWeights::TokenizerPath() const {
  if (config_.tokenizer_kind != TokenizerKind::kSentencePiece) return "";
  return JoinPath(directory_, config_.tokenizer_file);
}

int64_t ModelWeights::num_parameters() const {
  int64_t total = 0;
  for (const auto& [name, tensor] : tensors_) {
    total += static_cast<int64_t>(tensor.values.size());
  }
  return total;
}

std::span<const float> ModelWeights::Tensor(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return {};
  return it->second.values;
}

TensorView ModelWeights::View(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return {};
  return TensorView::Of(it->second.values.data(), DType::kF32,
                        it->second.shape);
}

DType ModelWeights::StoredDType(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? DType::kF32 : it->second.stored_dtype;
}

}  // namespace tvq::runtime
