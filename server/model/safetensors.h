// Reading safetensors files: an 8-byte little-endian header length, a JSON
// header {name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}},
// then the tensors' bytes (row-major, little-endian). The file is
// memory-mapped read-only; tensors are views into the mapping.
#ifndef TVQ_SERVER_MODEL_SAFETENSORS_H_
#define TVQ_SERVER_MODEL_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tvq::runtime {

// Bytes per element of a safetensors dtype ("F32" -> 4, "BF16" -> 2, ...),
// 0 for a name the format does not define.
int SafetensorsDtypeSize(std::string_view dtype);

struct SafetensorsTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;  // empty = scalar
  int64_t num_elements = 0;
  // Offset of the first byte from the start of the file.
  uint64_t file_offset = 0;
  // The tensor's bytes, inside the file's contents.
  std::span<const std::byte> bytes;
};

// Parses and checks the header of a whole safetensors file held in
// `contents`: the header length within the file, the header a JSON object
// without duplicate keys, every entry well formed (a known dtype, a shape of
// integers >= 0, data_offsets [begin, end] with end - begin equal to the
// element count times the dtype size), every range inside the data section,
// no two ranges overlapping. Tensors come back sorted by name, as
// views into `contents`. Errors are DataLoss naming `file_name` and the
// tensor. `metadata`, when given, receives the "__metadata__" strings.
absl::StatusOr<std::vector<SafetensorsTensor>> ParseSafetensors(
    std::span<const std::byte> contents, std::string_view file_name,
    std::map<std::string, std::string>* metadata = nullptr);

// A safetensors file mapped into memory.
class SafetensorsFile {
 public:
  // Maps `path` and parses it (ParseSafetensors). NotFound when the file
  // does not exist; messages name `path`.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  // The tensor called `name`, nullptr when absent.
  const SafetensorsTensor* Find(std::string_view name) const;
  // The whole file.
  std::span<const std::byte> contents() const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_MODEL_SAFETENSORS_H_
