// The model-directory loader: config.json, model.safetensors, and every
// defect they can have. Broken files are built here, in temporary
// directories, from the golden models.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/model/model_config.h"
#include "server/model/model_dir.h"
#include "server/model/model_weights.h"
#include "server/model/safetensors.h"
#include "tests/support/sanitizers.h"

namespace tvq::runtime {
namespace {

using ::nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;

namespace fs = std::filesystem;

const std::string kGoldenDir = std::string(TVQ_TEST_DATA_DIR) + "/golden";
constexpr std::string_view kQProj =
    "transformer_layers_0/scanned_attn1/q_proj/kernel";

std::string ReadBytes(const fs::path& path) {
  std::ifstream input(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(input), {});
}

void WriteBytes(const fs::path& path, std::string_view bytes) {
  std::ofstream output(path, std::ios::binary | std::ios::trunc);
  output.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A fresh directory under the test's temporary folder, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (fs::path(::testing::TempDir()) / "tvq_loader_XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

// One tensor as stored in a safetensors file.
struct StoredTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};
using TensorMap = std::map<std::string, StoredTensor>;

// Reads a safetensors file with nlohmann alone (independent of the loader).
TensorMap ReadSafetensors(const fs::path& path) {
  const std::string file = ReadBytes(path);
  uint64_t header_length = 0;
  std::memcpy(&header_length, file.data(), sizeof(header_length));
  const json header = json::parse(file.substr(8, header_length));
  const size_t data_start = 8 + header_length;
  TensorMap tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const uint64_t begin = entry["data_offsets"][0];
    const uint64_t end = entry["data_offsets"][1];
    tensors[name] = {entry["dtype"], entry["shape"].get<std::vector<int64_t>>(),
                     file.substr(data_start + begin, end - begin)};
  }
  return tensors;
}

// Lays the tensors out back to back (in name order) and returns the header;
// `data` receives the data section.
json LayOut(const TensorMap& tensors, std::string& data) {
  json header = json::object();
  data.clear();
  for (const auto& [name, tensor] : tensors) {
    header[name] = {
        {"dtype", tensor.dtype},
        {"shape", tensor.shape},
        {"data_offsets", {data.size(), data.size() + tensor.bytes.size()}}};
    data += tensor.bytes;
  }
  return header;
}

// An 8-byte little-endian length, the header text, the data.
std::string FileBytes(std::string_view header_text, std::string_view data) {
  std::string file(8, '\0');
  const uint64_t length = header_text.size();
  std::memcpy(file.data(), &length, sizeof(length));
  file += header_text;
  file += data;
  return file;
}

std::string FileFromHeader(const json& header, std::string_view data) {
  return FileBytes(header.dump(), data);
}

std::string SafetensorsBytes(const TensorMap& tensors) {
  std::string data;
  const json header = LayOut(tensors, data);
  return FileFromHeader(header, data);
}

std::string FloatBytes(const std::vector<float>& values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::vector<float> AsFloats(const StoredTensor& tensor) {
  std::vector<float> values(tensor.bytes.size() / sizeof(float));
  std::memcpy(values.data(), tensor.bytes.data(), tensor.bytes.size());
  return values;
}

// Round-to-nearest-even float32 -> bfloat16 bits.
uint16_t ToBFloat16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

// Float32 -> IEEE half bits, round to nearest (finite inputs).
uint16_t ToFloat16(float value) {
  const uint16_t sign = std::signbit(value) ? 0x8000 : 0;
  const double magnitude = std::fabs(static_cast<double>(value));
  if (magnitude >= 65520.0) return sign | 0x7C00;
  if (magnitude < std::ldexp(1.0, -14)) {  // subnormal (or zero)
    return sign | static_cast<uint16_t>(
                      std::nearbyint(magnitude / std::ldexp(1.0, -24)));
  }
  int exponent = 0;
  const double fraction = std::frexp(magnitude, &exponent);  // [0.5, 1)
  int biased = exponent - 1 + 15;
  long mantissa = std::lround((2 * fraction - 1) * 1024);
  if (mantissa == 1024) {
    mantissa = 0;
    ++biased;
  }
  if (biased >= 31) return sign | 0x7C00;
  return sign | static_cast<uint16_t>(biased << 10) |
         static_cast<uint16_t>(mantissa);
}

// The value of half bits, computed in double from the definition.
double Float16Value(uint16_t bits) {
  const int exponent = (bits >> 10) & 0x1F;
  const int mantissa = bits & 0x3FF;
  const double magnitude =
      exponent == 0 ? std::ldexp(mantissa, -24)
                    : std::ldexp(1.0 + mantissa / 1024.0, exponent - 15);
  return (bits & 0x8000) ? -magnitude : magnitude;
}

std::string HalfBytes(const std::vector<uint16_t>& values) {
  std::string bytes(values.size() * 2, '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

// A copy of a golden model directory whose files a test can break.
class ModelDir {
 public:
  explicit ModelDir(std::string_view golden = "tiny-byte") {
    const fs::path source = fs::path(kGoldenDir) / golden / "model";
    for (const auto& entry : fs::directory_iterator(source)) {
      fs::copy_file(entry.path(), dir_.path() / entry.path().filename());
    }
    config_ = json::parse(ReadBytes(dir_.path() / "config.json"));
    tensors_ = ReadSafetensors(dir_.path() / "model.safetensors");
  }

  std::string path() const { return dir_.str(); }
  fs::path file(std::string_view name) const { return dir_.path() / name; }
  json& config() { return config_; }
  TensorMap& tensors() { return tensors_; }

  void WriteConfig() const { WriteBytes(file("config.json"), config_.dump(2)); }
  void WriteConfigText(std::string_view text) const {
    WriteBytes(file("config.json"), text);
  }
  void WriteWeights() const {
    WriteBytes(file("model.safetensors"), SafetensorsBytes(tensors_));
  }
  void WriteWeightBytes(std::string_view bytes) const {
    WriteBytes(file("model.safetensors"), bytes);
  }
  // Writes config and weights, then loads.
  absl::StatusOr<std::unique_ptr<ModelWeights>> WriteAndLoad() const {
    WriteConfig();
    WriteWeights();
    return ModelWeights::Load(path());
  }

 private:
  TempDir dir_;
  json config_;
  TensorMap tensors_;
};

// Expects `status` to have `code` and a message containing every part.
void ExpectError(const absl::Status& status, absl::StatusCode code,
                 const std::vector<std::string>& parts) {
  EXPECT_EQ(status.code(), code) << status;
  for (const std::string& part : parts) {
    EXPECT_THAT(std::string(status.message()), HasSubstr(part));
  }
}

// ------------------------------------------------------------ golden models

TEST(ModelLoaderTest, LoadsTinyByte) {
  const std::string dir = kGoldenDir + "/tiny-byte/model";
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights =
      ModelWeights::Load(dir);
  ASSERT_TRUE(weights.ok()) << weights.status();
  const ModelConfig& config = (*weights)->config();
  EXPECT_EQ(config.d_model, 64);
  EXPECT_EQ(config.d_k, 16);
  EXPECT_EQ(config.d_v, 128);
  EXPECT_EQ(config.n_head, 1);
  EXPECT_EQ(config.n_code, 32);
  EXPECT_EQ(config.n_layer, 2);
  EXPECT_EQ(config.n_vocab, 259);
  EXPECT_EQ(config.block_len, 8);
  EXPECT_EQ(config.mem_len, 8);
  EXPECT_TRUE(config.agg_cache);
  EXPECT_FALSE(config.pe_abs);
  EXPECT_EQ(config.pe_lam, 100000);
  EXPECT_FALSE(config.e_tie);
  EXPECT_FALSE(config.e_preln);
  EXPECT_EQ(config.e_scale, 1.0);
  EXPECT_EQ(config.eos_id, 1);
  EXPECT_EQ(config.pad_id, 0);
  EXPECT_EQ(config.unk_id, 2);
  EXPECT_EQ(config.tokenizer_kind, TokenizerKind::kByte);
  EXPECT_EQ(config.num_sublayers(), 4);
  EXPECT_EQ((*weights)->directory(), dir);
  EXPECT_EQ((*weights)->TokenizerPath(), "");
  EXPECT_EQ((*weights)->stored_dtype(), "F32");

  // Every tensor equals the file's float32 values, read independently.
  const TensorMap stored = ReadSafetensors(dir + "/model.safetensors");
  int64_t total = 0;
  for (const auto& [name, tensor] : stored) {
    const std::vector<float> expected = AsFloats(tensor);
    const std::span<const float> actual = (*weights)->Tensor(name);
    ASSERT_EQ(actual.size(), expected.size()) << name;
    EXPECT_TRUE(std::equal(actual.begin(), actual.end(), expected.begin()))
        << name;
    total += static_cast<int64_t>(expected.size());
  }
  EXPECT_EQ((*weights)->num_parameters(), total);
  EXPECT_EQ((*weights)->Tensor(kQProj).size(), 64u * 16u);
  EXPECT_EQ((*weights)->Tensor("token_embedder/embs").size(), 259u * 64u);
  EXPECT_EQ((*weights)
                ->Tensor("transformer_layers_1/scanned_attn2/kvg_proj/kernel")
                .size(),
            64u * 272u);
  EXPECT_TRUE((*weights)->Tensor("no/such/tensor").empty());
  EXPECT_TRUE((*weights)->Tensor("out_ln/g").empty());
}

TEST(ModelLoaderTest, LoadsTinyNoagg) {
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights =
      ModelWeights::Load(kGoldenDir + "/tiny-noagg/model");
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_FALSE((*weights)->config().agg_cache);
  EXPECT_EQ((*weights)->config().n_vocab, 259);
  EXPECT_EQ((*weights)->Tensor("out_proj/kernel").size(), 64u * 259u);
}

TEST(ModelLoaderTest, LoadsTinyTied) {
  const std::string dir = kGoldenDir + "/tiny-tied/model";
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights =
      ModelWeights::Load(dir);
  ASSERT_TRUE(weights.ok()) << weights.status();
  const ModelConfig& config = (*weights)->config();
  EXPECT_EQ(config.n_vocab, 300);
  EXPECT_TRUE(config.agg_cache);
  EXPECT_TRUE(config.pe_abs);
  EXPECT_TRUE(config.e_tie);
  EXPECT_TRUE(config.e_preln);
  EXPECT_EQ(config.e_scale, 0.5);
  EXPECT_EQ(config.tokenizer_kind, TokenizerKind::kSentencePiece);
  EXPECT_EQ(config.tokenizer_file, "tokenizer.model");
  EXPECT_EQ((*weights)->TokenizerPath(), dir + "/tokenizer.model");
  EXPECT_TRUE((*weights)->Tensor("out_proj/kernel").empty());
  EXPECT_EQ((*weights)->Tensor("out_ln/g").size(), 64u);

  const TensorMap stored = ReadSafetensors(dir + "/model.safetensors");
  const std::span<const float> scale =
      (*weights)->Tensor("position_embedder/scale");
  ASSERT_EQ(scale.size(), 1u);
  EXPECT_EQ(scale[0], AsFloats(stored.at("position_embedder/scale"))[0]);
  const std::span<const float> bias =
      (*weights)->Tensor("token_embedder/bias_out");
  const std::vector<float> expected_bias =
      AsFloats(stored.at("token_embedder/bias_out"));
  ASSERT_EQ(bias.size(), 300u);
  EXPECT_EQ(bias[0], expected_bias[0]);
  EXPECT_EQ(bias[299], expected_bias[299]);
}

TEST(ModelLoaderTest, ExpectedTensorsFollowTheConfig) {
  ModelConfig config;
  config.d_model = 8;
  config.d_k = 2;
  config.d_v = 3;
  config.n_head = 2;
  config.n_code = 5;
  config.n_layer = 1;
  config.n_vocab = 259;
  config.pe_abs = true;
  config.e_preln = true;
  config.e_tie = true;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const TensorSpec& spec : ExpectedTensors(config)) {
    shapes[spec.name] = spec.shape;
  }
  EXPECT_EQ(shapes.size(), 2u + 1u + 2u + 2u * 10u);
  EXPECT_EQ(shapes.at("position_embedder/scale"), std::vector<int64_t>{});
  EXPECT_EQ(shapes.at("transformer_layers_0/scanned_attn2/kvg_proj/kernel"),
            (std::vector<int64_t>{8, 2 * (2 + 2 * 3)}));
  EXPECT_EQ(shapes.at("transformer_layers_0/scanned_attn1/res_proj/kernel"),
            (std::vector<int64_t>{6, 8}));
  EXPECT_EQ(shapes.at("transformer_layers_0/scanned_attn1/quantizer/c_sum"),
            (std::vector<int64_t>{2, 5, 2}));
  EXPECT_FALSE(shapes.contains("out_proj/kernel"));
  EXPECT_EQ(SublayerPrefix(3), "transformer_layers_1/scanned_attn2/");
}

// ------------------------------------------------------------ dtypes

TEST(ModelLoaderTest, Bfloat16WeightsConvertToFloat32) {
  ModelDir model;
  const TensorMap original = model.tensors();
  for (auto& [name, tensor] : model.tensors()) {
    std::vector<uint16_t> halves;
    for (float value : AsFloats(tensor)) halves.push_back(ToBFloat16(value));
    tensor = {"BF16", tensor.shape, HalfBytes(halves)};
  }
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = model.WriteAndLoad();
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ((*weights)->stored_dtype(), "BF16");
  for (const auto& [name, tensor] : original) {
    const std::vector<float> values = AsFloats(tensor);
    const std::span<const float> loaded = (*weights)->Tensor(name);
    ASSERT_EQ(loaded.size(), values.size()) << name;
    for (size_t i = 0; i < values.size(); ++i) {
      // Exactly the bfloat16 value: its bits are the float's top 16.
      const uint32_t expected_bits =
          static_cast<uint32_t>(ToBFloat16(values[i])) << 16;
      ASSERT_EQ(std::bit_cast<uint32_t>(loaded[i]), expected_bits)
          << name << " [" << i << "]";
      ASSERT_NEAR(loaded[i], values[i], std::fabs(values[i]) / 256 + 1e-30)
          << name << " [" << i << "]";
    }
  }
}

// The view the backend gets: the F32 conversion (exact numbers), the spec
// shape, and the dtype the file stored.
TEST(ModelLoaderTest, ViewsCarryShapeAndTheStoredDType) {
  ModelDir model;
  const TensorMap original = model.tensors();
  const std::string converted(kQProj);
  for (auto& [name, tensor] : model.tensors()) {
    if (name != converted) continue;
    std::vector<uint16_t> halves;
    for (float value : AsFloats(tensor)) halves.push_back(ToBFloat16(value));
    tensor = {"BF16", tensor.shape, HalfBytes(halves)};
  }
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = model.WriteAndLoad();
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ((*weights)->stored_dtype(), "mixed");
  for (const auto& [name, tensor] : original) {
    const TensorView view = (*weights)->View(name);
    ASSERT_FALSE(view.empty()) << name;
    EXPECT_EQ(view.dtype, DType::kF32) << name;
    ASSERT_EQ(view.rank, static_cast<int>(tensor.shape.size())) << name;
    for (int i = 0; i < view.rank; ++i) {
      EXPECT_EQ(view.dim(i), tensor.shape[i]) << name << " dim " << i;
    }
    EXPECT_EQ(view.row_stride, view.cols()) << name;
    EXPECT_EQ(view.as<float>(), (*weights)->Tensor(name).data()) << name;
    EXPECT_EQ((*weights)->StoredDType(name),
              name == converted ? DType::kBF16 : DType::kF32)
        << name;
  }
  EXPECT_TRUE((*weights)->View("no/such/tensor").empty());
}

TEST(ModelLoaderTest, Float16WeightsConvertToFloat32) {
  ModelDir model;
  const TensorMap original = model.tensors();
  for (auto& [name, tensor] : model.tensors()) {
    std::vector<uint16_t> halves;
    for (float value : AsFloats(tensor)) halves.push_back(ToFloat16(value));
    tensor = {"F16", tensor.shape, HalfBytes(halves)};
  }
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = model.WriteAndLoad();
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ((*weights)->stored_dtype(), "F16");
  for (const auto& [name, tensor] : original) {
    const std::vector<float> values = AsFloats(tensor);
    const std::span<const float> loaded = (*weights)->Tensor(name);
    ASSERT_EQ(loaded.size(), values.size()) << name;
    for (size_t i = 0; i < values.size(); ++i) {
      ASSERT_EQ(loaded[i], Float16Value(ToFloat16(values[i])))
          << name << " [" << i << "]";
      ASSERT_NEAR(loaded[i], values[i],
                  std::fabs(values[i]) / 2048 + std::ldexp(1.0, -25))
          << name << " [" << i << "]";
    }
  }
}

TEST(ModelLoaderTest, Float16SpecialValues) {
  ModelDir model;
  // u of the first sublayer has 16 values; fill it with edge cases.
  const std::vector<uint16_t> bits = {
      0x0000, 0x8000, 0x3C00, 0xC000, 0x7BFF, 0xFBFF, 0x0001, 0x8001,
      0x03FF, 0x0400, 0x3555, 0x1234, 0x5678, 0x2E66, 0x4248, 0xB800};
  model.tensors()["transformer_layers_0/scanned_attn1/u"] = {
      "F16", {16}, HalfBytes(bits)};
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = model.WriteAndLoad();
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ((*weights)->stored_dtype(), "mixed");
  const std::span<const float> u =
      (*weights)->Tensor("transformer_layers_0/scanned_attn1/u");
  ASSERT_EQ(u.size(), bits.size());
  for (size_t i = 0; i < bits.size(); ++i) {
    EXPECT_EQ(u[i], Float16Value(bits[i])) << "bits 0x" << std::hex << bits[i];
  }
  EXPECT_EQ(u[2], 1.0f);
  EXPECT_EQ(u[3], -2.0f);
  EXPECT_EQ(u[4], 65504.0f);
  EXPECT_EQ(u[6], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::signbit(u[1]));
}

TEST(ModelLoaderTest, UnalignedFloat32DataIsCopiedCorrectly) {
  ModelDir model;
  std::string data;
  json header = LayOut(model.tensors(), data);
  // Pad the header so that the data section starts at an odd offset.
  std::string header_text = header.dump();
  while ((8 + header_text.size()) % 4 != 1) header_text += ' ';
  model.WriteConfig();
  model.WriteWeightBytes(FileBytes(header_text, data));
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights =
      ModelWeights::Load(model.path());
  ASSERT_TRUE(weights.ok()) << weights.status();
  for (const auto& [name, tensor] : model.tensors()) {
    const std::vector<float> expected = AsFloats(tensor);
    const std::span<const float> loaded = (*weights)->Tensor(name);
    ASSERT_EQ(loaded.size(), expected.size());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(loaded.data()) % alignof(float), 0u);
    EXPECT_TRUE(std::equal(loaded.begin(), loaded.end(), expected.begin()))
        << name;
  }
}

TEST(ModelLoaderTest, MetadataIsAllowed) {
  ModelDir model;
  std::string data;
  json header = LayOut(model.tensors(), data);
  header["__metadata__"] = {{"format", "pt"}, {"note", "made by a test"}};
  model.WriteConfig();
  model.WriteWeightBytes(FileFromHeader(header, data));
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights =
      ModelWeights::Load(model.path());
  EXPECT_TRUE(weights.ok()) << weights.status();

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(model.file("model.safetensors").string());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("note"), "made by a test");
}

// ------------------------------------------------------------ missing files

TEST(ModelLoaderTest, MissingDirectoryIsNotFound) {
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights =
      ModelWeights::Load("/nonexistent/tvq-model");
  ExpectError(weights.status(), absl::StatusCode::kNotFound,
              {"/nonexistent/tvq-model/config.json"});
}

TEST(ModelLoaderTest, MissingWeightsFileIsNotFound) {
  ModelDir model;
  fs::remove(model.file("model.safetensors"));
  ExpectError(ModelWeights::Load(model.path()).status(),
              absl::StatusCode::kNotFound, {"model.safetensors"});
}

TEST(ModelLoaderTest, MissingSentencePieceFileIsNotFound) {
  ModelDir model("tiny-tied");
  fs::remove(model.file("tokenizer.model"));
  ExpectError(LoadModelDir(model.path()).status(), absl::StatusCode::kNotFound,
              {"tokenizer.model"});
}

// ------------------------------------------------------------ config.json

class ConfigDefectTest : public ::testing::Test {
 protected:
  // Writes the config (weights untouched) and loads.
  absl::Status Load() {
    model_.WriteConfig();
    return ModelWeights::Load(model_.path()).status();
  }
  void ExpectConfigError(const std::vector<std::string>& parts) {
    std::vector<std::string> all = parts;
    all.push_back("config.json");
    ExpectError(Load(), absl::StatusCode::kInvalidArgument, all);
  }
  json& config() { return model_.config(); }

  ModelDir model_;
};

TEST_F(ConfigDefectTest, EveryRequiredKeyIsRequired) {
  const json original = config();
  for (const auto& [key, value] : original.items()) {
    config() = original;
    config().erase(key);
    SCOPED_TRACE(key);
    ExpectConfigError({"missing required key \"" + key + "\""});
  }
}

TEST_F(ConfigDefectTest, IntegersMustBeIntegers) {
  config()["d_k"] = "x";
  ExpectConfigError({"\"d_k\" must be an integer >= 1, got \"x\""});
  config()["d_k"] = 16.5;
  ExpectConfigError({"\"d_k\"", "16.5"});
  config()["d_k"] = 16.0;  // a float, even a whole one, is not an integer
  ExpectConfigError({"\"d_k\"", "16.0"});
  config()["d_k"] = 16;
  config()["n_layer"] = true;
  ExpectConfigError({"\"n_layer\"", "true"});
  config()["n_layer"] = 2;
  config()["eos_id"] = 1.0;
  ExpectConfigError({"\"eos_id\""});
  config()["eos_id"] = 1;
  config()["mem_len"] = 1e12;
  ExpectConfigError({"\"mem_len\""});
  config()["mem_len"] = 99999999999;
  ExpectConfigError({"\"mem_len\"", "out of range"});
}

TEST_F(ConfigDefectTest, BoolsMustBeBools) {
  config()["agg_cache"] = 1;
  ExpectConfigError({"\"agg_cache\" must be true or false, got 1"});
  config()["agg_cache"] = true;
  config()["e_tie"] = "false";
  ExpectConfigError({"\"e_tie\"", "\"false\""});
}

TEST_F(ConfigDefectTest, NumbersMustBeNumbers) {
  config()["pe_lam"] = "1e5";
  ExpectConfigError({"\"pe_lam\" must be a number > 0"});
  config()["pe_lam"] = 0;
  ExpectConfigError({"\"pe_lam\" must be a number > 0, got 0"});
  config()["pe_lam"] = 10000;  // an integer is a number
  config()["e_scale"] = nullptr;
  ExpectConfigError({"\"e_scale\"", "null"});
  config()["e_scale"] = 2;
  EXPECT_TRUE(Load().ok());
}

TEST_F(ConfigDefectTest, UnknownFormatOrVersion) {
  config()["format"] = "gguf";
  ExpectConfigError({"\"format\" must be \"transformer-vq\", got \"gguf\""});
  config()["format"] = "transformer-vq";
  config()["format_version"] = 3;
  ExpectConfigError({"\"format_version\" 3"});
  config()["format_version"] = "1";
  ExpectConfigError({"\"format_version\""});
}

TEST_F(ConfigDefectTest, SizesMustBePositive) {
  for (std::string key : {"d_model", "d_k", "d_v", "n_head", "n_code",
                          "n_layer", "n_vocab", "block_len", "mem_len"}) {
    SCOPED_TRACE(key);
    const std::string quoted = absl::StrCat("\"", key, "\"");
    const json saved = config()[key];
    config()[key] = 0;
    ExpectConfigError({absl::StrCat(quoted, " must be an integer >= 1")});
    config()[key] = -3;
    ExpectConfigError({quoted, "-3"});
    config()[key] = saved;
  }
  config()["n_code"] = kMaxModelDimension + 1;
  ExpectConfigError({"\"n_code\" must be at most"});
}

TEST_F(ConfigDefectTest, DModelMustBeEven) {
  config()["d_model"] = 63;
  ExpectConfigError({"\"d_model\" must be even, got 63"});
}

TEST_F(ConfigDefectTest, SpecialIdsMustBeInTheVocabulary) {
  config()["eos_id"] = 259;
  ExpectConfigError({"\"eos_id\" must be in [0, n_vocab = 259), got 259"});
  config()["eos_id"] = 1;
  config()["pad_id"] = -1;
  ExpectConfigError({"\"pad_id\"", "-1"});
  config()["pad_id"] = 0;
  config()["unk_id"] = 1000;
  ExpectConfigError({"\"unk_id\"", "1000"});
}

TEST_F(ConfigDefectTest, ByteVocabularyNeeds259Ids) {
  config()["n_vocab"] = 258;
  ExpectConfigError({"\"n_vocab\" must be >= 259 for the byte tokenizer"});
}

TEST_F(ConfigDefectTest, TokenizerObjectShape) {
  config()["tokenizer"] = "byte";
  ExpectConfigError({"\"tokenizer\" must be an object"});
  config()["tokenizer"] = json::object();
  ExpectConfigError({"\"tokenizer.kind\""});
  config()["tokenizer"] = {{"kind", "bpe"}};
  ExpectConfigError(
      {"\"tokenizer.kind\" must be \"byte\" or \"sentencepiece\""});
  config()["tokenizer"] = {{"kind", "byte"}, {"file", "x.model"}};
  ExpectConfigError({"unexpected key \"file\""});
  config()["tokenizer"] = {{"kind", "sentencepiece"}};
  ExpectConfigError({"\"tokenizer.file\""});
  config()["tokenizer"] = {{"kind", "sentencepiece"}, {"file", 7}};
  ExpectConfigError({"\"tokenizer.file\"", "7"});
  config()["tokenizer"] = {{"kind", "sentencepiece"}, {"file", ""}};
  ExpectConfigError({"\"tokenizer.file\" must be a non-empty file name"});
  config()["tokenizer"] = {{"kind", "sentencepiece"}, {"file", "../x.model"}};
  ExpectConfigError({"\"tokenizer.file\"", "../x.model"});
  config()["tokenizer"] = {{"kind", "sentencepiece"}, {"file", "/etc/passwd"}};
  ExpectConfigError({"\"tokenizer.file\"", "/etc/passwd"});
}

TEST_F(ConfigDefectTest, NotJson) {
  model_.WriteConfigText("{\"format\": \"transformer-vq\",");
  ExpectError(ModelWeights::Load(model_.path()).status(),
              absl::StatusCode::kInvalidArgument,
              {"config.json", "is not valid JSON"});
  model_.WriteConfigText("[1, 2]");
  ExpectError(ModelWeights::Load(model_.path()).status(),
              absl::StatusCode::kInvalidArgument,
              {"config.json", "JSON object", "array"});
}

TEST_F(ConfigDefectTest, DuplicateKeys) {
  std::string text = config().dump();
  text.insert(1, "\"d_k\": 3, ");
  model_.WriteConfigText(text);
  ExpectError(ModelWeights::Load(model_.path()).status(),
              absl::StatusCode::kInvalidArgument,
              {"config.json", "\"d_k\" more than once"});
}

TEST_F(ConfigDefectTest, UnknownTopLevelKeysAreIgnored) {
  config()["notes"] = "trained on enwik8";
  EXPECT_TRUE(Load().ok());
}

TEST(ConfigTest, ParseModelConfigNamesTheFileItIsGiven) {
  absl::StatusOr<ModelConfig> config =
      ParseModelConfig("{\"format\": 1}", "my/config.json");
  ExpectError(config.status(), absl::StatusCode::kInvalidArgument,
              {"my/config.json: \"format\""});
}

TEST(ConfigTest, SentencePieceVocabularyMustFitNVocab) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  ModelDir model("tiny-tied");
  model.config()["n_vocab"] = 299;
  model.WriteConfig();
  ExpectError(
      LoadModelDir(model.path()).status(), absl::StatusCode::kInvalidArgument,
      {"config.json", "\"n_vocab\" is 299", "tokenizer.model", "300 pieces"});
}

TEST(ConfigTest, SentencePieceVocabularyMayBeSmallerThanNVocab) {
  ModelDir model("tiny-tied");
  model.config()["n_vocab"] = 304;  // padded vocabulary
  for (auto& [name, tensor] : model.tensors()) {
    if (name == "token_embedder/embs") {
      tensor.shape[0] = 304;
      tensor.bytes.append(4 * 64 * sizeof(float), '\0');
    } else if (name == "token_embedder/bias_out") {
      tensor.shape[0] = 304;
      tensor.bytes.append(4 * sizeof(float), '\0');
    }
  }
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = model.WriteAndLoad();
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ((*weights)->Tensor("token_embedder/embs").size(), 304u * 64u);
}

// ------------------------------------------------------------ tensors

TEST(TensorDefectTest, WrongShape) {
  ModelDir model;
  StoredTensor& q_proj = model.tensors()[std::string(kQProj)];
  q_proj.shape = {64, 15};
  q_proj.bytes.resize(64 * 15 * sizeof(float));
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kInvalidArgument,
              {"model.safetensors: tensor "
               "\"transformer_layers_0/scanned_attn1/q_proj/kernel\" has "
               "shape [64, 15], expected [64, 16]"});
}

TEST(TensorDefectTest, SameSizeButTransposed) {
  ModelDir model;
  model.tensors()[std::string(kQProj)].shape = {16, 64};
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kInvalidArgument,
              {std::string(kQProj), "[16, 64], expected [64, 16]"});
}

TEST(TensorDefectTest, ScalarMustBeScalar) {
  ModelDir model("tiny-tied");
  model.tensors()["position_embedder/scale"].shape = {1};
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kInvalidArgument,
              {"position_embedder/scale", "shape [1], expected []"});
}

TEST(TensorDefectTest, MissingTensor) {
  ModelDir model;
  model.tensors().erase("transformer_layers_1/scanned_attn2/u");
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kInvalidArgument,
              {"model.safetensors", "missing tensor",
               "\"transformer_layers_1/scanned_attn2/u\""});
}

TEST(TensorDefectTest, ConfigNeedsATensorTheFileLacks) {
  ModelDir model;
  model.config()["e_preln"] = true;
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kInvalidArgument,
              {"model.safetensors", "missing tensor \"out_ln/g\""});
}

TEST(TensorDefectTest, WrongDtype) {
  ModelDir model;
  model.tensors()[std::string(kQProj)].dtype = "I32";
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kInvalidArgument,
              {std::string(kQProj), "dtype I32, expected F32, BF16 or F16"});
  model.tensors()[std::string(kQProj)].dtype = "F64";
  model.tensors()[std::string(kQProj)].bytes.append(64 * 16 * 4, '\0');
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kInvalidArgument,
              {std::string(kQProj), "dtype F64"});
}

TEST(TensorDefectTest, UnknownDtype) {
  ModelDir model;
  model.tensors()[std::string(kQProj)].dtype = "F7";
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kDataLoss,
              {"model.safetensors", std::string(kQProj), "unknown dtype"});
}

TEST(TensorDefectTest, UnexpectedTensor) {
  ModelDir model;
  model.tensors()["extra/bias"] = {"F32", {2}, FloatBytes({1, 2})};
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kInvalidArgument,
              {"model.safetensors", "unexpected tensor \"extra/bias\""});
}

TEST(TensorDefectTest, UnexpectedTensorSaysWhichFlagExcludesIt) {
  ModelDir model;
  model.tensors()["out_ln/g"] = {
      "F32", {64}, FloatBytes(std::vector<float>(64))};
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kInvalidArgument,
              {"unexpected tensor \"out_ln/g\"", "e_preln is false"});
  model.tensors().erase("out_ln/g");
  model.config()["n_layer"] = 1;
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kInvalidArgument,
              {"unexpected tensor \"transformer_layers_1/", "n_layer is 1"});
}

TEST(TensorDefectTest, NonFiniteValues) {
  const float kNaN = std::numeric_limits<float>::quiet_NaN();
  const float kInf = std::numeric_limits<float>::infinity();
  for (float bad : {kNaN, kInf, -kInf}) {
    ModelDir model;
    StoredTensor& tensor = model.tensors()[std::string(kQProj)];
    std::vector<float> values = AsFloats(tensor);
    values[17] = bad;
    tensor.bytes = FloatBytes(values);
    ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kDataLoss,
                {"model.safetensors", std::string(kQProj), "non-finite",
                 "flat index 17"});
  }
}

TEST(TensorDefectTest, NonFiniteHalfValues) {
  ModelDir model;
  std::vector<uint16_t> bits(16, 0x3C00);
  bits[9] = 0x7C00;  // +Inf
  model.tensors()["transformer_layers_0/scanned_attn1/v"] = {
      "F16", {16}, HalfBytes(bits)};
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kDataLoss,
              {"transformer_layers_0/scanned_attn1/v", "+Inf", "flat index 9"});
  bits[9] = 0x7E00;  // NaN
  model.tensors()["transformer_layers_0/scanned_attn1/v"].bytes =
      HalfBytes(bits);
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kDataLoss,
              {"transformer_layers_0/scanned_attn1/v", "NaN", "flat index 9"});
  model.tensors()["transformer_layers_0/scanned_attn1/v"] = {
      "BF16", {16}, HalfBytes(std::vector<uint16_t>(16, 0xFF80))};  // -Inf
  ExpectError(model.WriteAndLoad().status(), absl::StatusCode::kDataLoss,
              {"transformer_layers_0/scanned_attn1/v", "-Inf", "flat index 0"});
}

// ------------------------------------------------------------ file structure

class FileDefectTest : public ::testing::Test {
 protected:
  FileDefectTest() {
    header_ = LayOut(model_.tensors(), data_);
    model_.WriteConfig();
  }
  absl::Status LoadBytes(std::string_view bytes) {
    model_.WriteWeightBytes(bytes);
    return ModelWeights::Load(model_.path()).status();
  }
  void ExpectDataLoss(std::string_view bytes,
                      const std::vector<std::string>& parts) {
    std::vector<std::string> all = parts;
    all.push_back("model.safetensors");
    ExpectError(LoadBytes(bytes), absl::StatusCode::kDataLoss, all);
  }

  ModelDir model_;
  json header_;
  std::string data_;
};

TEST_F(FileDefectTest, ShorterThanTheLengthField) {
  ExpectDataLoss("", {"0 bytes, too short"});
  ExpectDataLoss("abc", {"3 bytes, too short"});
}

TEST_F(FileDefectTest, HeaderLengthBeyondTheFile) {
  std::string file = FileFromHeader(header_, data_);
  const uint64_t too_long = file.size();
  std::memcpy(file.data(), &too_long, sizeof(too_long));
  ExpectDataLoss(
      file, {"header length " + std::to_string(too_long), "exceeds the file"});
  const uint64_t huge = std::numeric_limits<uint64_t>::max();
  std::memcpy(file.data(), &huge, sizeof(huge));
  ExpectDataLoss(file, {"header length", "exceeds the file"});
}

TEST_F(FileDefectTest, HeaderNotJson) {
  ExpectDataLoss(FileBytes("{\"a\": [1, 2", data_),
                 {"header is not valid JSON"});
  ExpectDataLoss(FileBytes("\xFF\xFE", data_), {"header is not valid JSON"});
  ExpectDataLoss(FileBytes("[]", data_), {"must be a JSON object", "array"});
}

TEST_F(FileDefectTest, DuplicateTensorNames) {
  std::string text = header_.dump();
  // Repeat the first entry.
  const std::string first = "\"" + header_.begin().key() +
                            "\":" + header_.begin().value().dump() + ",";
  text.insert(1, first);
  ExpectDataLoss(FileBytes(text, data_),
                 {header_.begin().key(), "more than once"});
}

TEST_F(FileDefectTest, MalformedEntries) {
  json header = header_;
  header[std::string(kQProj)]["shape"] = {64, -16};
  ExpectDataLoss(FileFromHeader(header, data_),
                 {std::string(kQProj), "integers >= 0"});
  header = header_;
  header[std::string(kQProj)].erase("dtype");
  ExpectDataLoss(FileFromHeader(header, data_), {std::string(kQProj), "dtype"});
  header = header_;
  header[std::string(kQProj)]["data_offsets"] = {10};
  ExpectDataLoss(FileFromHeader(header, data_),
                 {std::string(kQProj), "data_offsets"});
  header = header_;
  header[std::string(kQProj)] = 5;
  ExpectDataLoss(FileFromHeader(header, data_), {std::string(kQProj)});
  header = header_;
  header["__metadata__"] = {{"n", 5}};
  ExpectDataLoss(FileFromHeader(header, data_), {"__metadata__", "\"n\""});
}

TEST_F(FileDefectTest, DataOffsetsOutOfRange) {
  json header = header_;
  json& offsets = header[std::string(kQProj)]["data_offsets"];
  offsets = {data_.size() + 4, data_.size() + 4 + 64 * 16 * 4};
  ExpectDataLoss(FileFromHeader(header, data_),
                 {std::string(kQProj), "beyond the end of the data section"});
  offsets = {8, 4};
  ExpectDataLoss(FileFromHeader(header, data_),
                 {std::string(kQProj), "0 <= begin <= end"});
}

TEST_F(FileDefectTest, DataSizeDoesNotMatchShape) {
  json header = header_;
  json& offsets = header[std::string(kQProj)]["data_offsets"];
  const uint64_t begin = offsets[0];
  offsets[1] = begin + 64 * 16 * 4 - 4;
  ExpectDataLoss(
      FileFromHeader(header, data_),
      {std::string(kQProj), "4092 bytes of data", "F32 [64, 16] needs 4096"});
}

TEST_F(FileDefectTest, OverlappingTensors) {
  json header = header_;
  // Two tensors of the same size made to share their bytes.
  const std::string u = "transformer_layers_0/scanned_attn1/u";
  const std::string v = "transformer_layers_0/scanned_attn1/v";
  header[v]["data_offsets"] = header[u]["data_offsets"];
  ExpectDataLoss(FileFromHeader(header, data_), {u, v, "overlap"});
  // Partial overlap.
  header = header_;
  const uint64_t u_begin = header[u]["data_offsets"][0];
  header[v]["data_offsets"] = {u_begin + 8, u_begin + 8 + 64};
  ExpectDataLoss(FileFromHeader(header, data_), {u, v, "overlap"});
}

TEST_F(FileDefectTest, TruncatedData) {
  const std::string file = FileFromHeader(header_, data_);
  // The tensor whose bytes come last.
  std::string last_name;
  uint64_t last_end = 0;
  for (const auto& [name, entry] : header_.items()) {
    if (entry["data_offsets"][1].get<uint64_t>() > last_end) {
      last_end = entry["data_offsets"][1];
      last_name = name;
    }
  }
  ExpectDataLoss(
      std::string_view(file).substr(0, file.size() - 10),
      {last_name, "beyond the end of the data section", "truncated"});
  // Cut inside the header.
  ExpectDataLoss(std::string_view(file).substr(0, 100),
                 {"header length", "exceeds the file"});
}

TEST_F(FileDefectTest, ZeroSizedTensorsNeverOverlap) {
  // A file with empty tensors sharing an offset parses (the loader then
  // rejects them as unexpected, by name).
  json header = header_;
  header["empty/a"] = {
      {"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {0, 0}}};
  header["empty/b"] = {
      {"dtype", "F32"}, {"shape", {4, 0}}, {"data_offsets", {0, 0}}};
  ExpectError(LoadBytes(FileFromHeader(header, data_)),
              absl::StatusCode::kInvalidArgument,
              {"unexpected tensor \"empty/a\""});
}

TEST_F(FileDefectTest, EveryTruncationIsAnError) {
  const std::string file = FileFromHeader(header_, data_);
  const size_t header_end = 8 + header_.dump().size();
  for (size_t length = 0; length < file.size();
       length += length < header_end + 64 ? 3 : 4099) {
    const absl::Status status =
        LoadBytes(std::string_view(file).substr(0, length));
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss)
        << "length " << length << ": " << status;
  }
}

TEST_F(FileDefectTest, RandomHeaderDamageNeverCrashes) {
  const std::string file = FileFromHeader(header_, data_);
  const size_t header_end = 8 + header_.dump().size();
  std::mt19937 random(2024);
  std::uniform_int_distribution<size_t> position(0, header_end - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  int failures = 0;
  for (int round = 0; round < 300; ++round) {
    std::string damaged = file;
    for (int flips = 0; flips < 1 + round % 3; ++flips) {
      damaged[position(random)] = static_cast<char>(byte(random));
    }
    // Any outcome but a crash; most damage must be caught.
    const absl::Status status = LoadBytes(damaged);
    if (!status.ok()) {
      ++failures;
      EXPECT_FALSE(status.message().empty());
    }
  }
  EXPECT_GT(failures, 250) << "seed 2024";
}

// ------------------------------------------------------------ safetensors API

TEST(SafetensorsTest, ParsesTensorsAsViewsIntoTheFile) {
  TensorMap tensors;
  tensors["a"] = {"F32", {2}, FloatBytes({1.5f, -2})};
  tensors["b/c"] = {"I32", {1, 3}, std::string(12, '\x01')};
  tensors["s"] = {"BF16", {}, std::string("\x80\x3F", 2)};
  const std::string file = SafetensorsBytes(tensors);
  const std::span<const std::byte> contents(
      reinterpret_cast<const std::byte*>(file.data()), file.size());
  absl::StatusOr<std::vector<SafetensorsTensor>> parsed =
      ParseSafetensors(contents, "in-memory");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 3u);
  EXPECT_EQ((*parsed)[0].name, "a");
  EXPECT_EQ((*parsed)[0].num_elements, 2);
  EXPECT_EQ((*parsed)[1].dtype, "I32");
  EXPECT_EQ((*parsed)[1].shape, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ((*parsed)[2].shape, std::vector<int64_t>{});
  EXPECT_EQ((*parsed)[2].num_elements, 1);
  float first = 0;
  std::memcpy(&first, (*parsed)[0].bytes.data(), sizeof(first));
  EXPECT_EQ(first, 1.5f);
  EXPECT_EQ((*parsed)[0].bytes.data(),
            contents.data() + (*parsed)[0].file_offset);
  EXPECT_EQ(SafetensorsDtypeSize("BF16"), 2);
  EXPECT_EQ(SafetensorsDtypeSize("F64"), 8);
  EXPECT_EQ(SafetensorsDtypeSize("Q4"), 0);
}

TEST(SafetensorsTest, OpensTheGoldenVectorsFile) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(kGoldenDir + "/tiny-byte/golden.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsTensor* tokens = (*file)->Find("tokens");
  ASSERT_NE(tokens, nullptr);
  EXPECT_EQ(tokens->dtype, "I32");
  EXPECT_EQ(tokens->shape, std::vector<int64_t>{80});
  int32_t first_token = -1;
  std::memcpy(&first_token, tokens->bytes.data(), sizeof(first_token));
  EXPECT_EQ(first_token, 1);  // sequences start with eos
  EXPECT_EQ((*file)->Find("nothing"), nullptr);
}

TEST(SafetensorsTest, DirectoryIsNotAFile) {
  TempDir dir;
  ExpectError(SafetensorsFile::Open(dir.str()).status(),
              absl::StatusCode::kInvalidArgument, {"not a regular file"});
}

// ------------------------------------------------------------ FromTensors

std::map<std::string, std::vector<float>> GoldenTensors(
    const ModelWeights& weights) {
  std::map<std::string, std::vector<float>> tensors;
  for (const TensorSpec& spec : ExpectedTensors(weights.config())) {
    const std::span<const float> values = weights.Tensor(spec.name);
    tensors[spec.name] = std::vector<float>(values.begin(), values.end());
  }
  return tensors;
}

class FromTensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ModelWeights>> golden =
        ModelWeights::Load(kGoldenDir + "/tiny-tied/model");
    ASSERT_TRUE(golden.ok()) << golden.status();
    config_ = (*golden)->config();
    tensors_ = GoldenTensors(**golden);
    golden_ = *std::move(golden);
  }

  ModelConfig config_;
  std::map<std::string, std::vector<float>> tensors_;
  std::unique_ptr<ModelWeights> golden_;
};

TEST_F(FromTensorsTest, BuildsTheSameWeights) {
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights =
      ModelWeights::FromTensors(config_, tensors_);
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ((*weights)->num_parameters(), golden_->num_parameters());
  EXPECT_EQ((*weights)->stored_dtype(), "F32");
  const std::span<const float> embs = (*weights)->Tensor("token_embedder/embs");
  const std::span<const float> golden_embs =
      golden_->Tensor("token_embedder/embs");
  ASSERT_EQ(embs.size(), golden_embs.size());
  EXPECT_TRUE(std::equal(embs.begin(), embs.end(), golden_embs.begin()));
}

TEST_F(FromTensorsTest, ValidatesLikeLoad) {
  auto tensors = tensors_;
  tensors.erase("out_ln/b");
  ExpectError(ModelWeights::FromTensors(config_, tensors).status(),
              absl::StatusCode::kInvalidArgument,
              {"missing tensor \"out_ln/b\""});

  tensors = tensors_;
  tensors["out_ln/b"].pop_back();
  ExpectError(ModelWeights::FromTensors(config_, tensors).status(),
              absl::StatusCode::kInvalidArgument,
              {"\"out_ln/b\" has 63 values, expected 64"});

  tensors = tensors_;
  tensors["out_proj/kernel"] = std::vector<float>(64 * 300);
  ExpectError(ModelWeights::FromTensors(config_, tensors).status(),
              absl::StatusCode::kInvalidArgument,
              {"unexpected tensor \"out_proj/kernel\"", "e_tie is true"});

  tensors = tensors_;
  tensors["out_ln/g"][5] = std::numeric_limits<float>::quiet_NaN();
  ExpectError(ModelWeights::FromTensors(config_, tensors).status(),
              absl::StatusCode::kInvalidArgument,
              {"\"out_ln/g\"", "NaN", "flat index 5"});

  ModelConfig config = config_;
  config.d_model = 63;
  ExpectError(ModelWeights::FromTensors(config, tensors_).status(),
              absl::StatusCode::kInvalidArgument, {"\"d_model\" must be even"});
}

}  // namespace
}  // namespace tvq::runtime
