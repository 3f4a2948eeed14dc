#include "server/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/base/status_macros.h"
#include "server/base/str_cat.h"
#include "server/base/strict_json.h"

namespace tvq::runtime {
namespace {

using nlohmann::json;

constexpr size_t kHeaderLengthBytes = 8;
constexpr std::string_view kMetadataKey = "__metadata__";
// Element counts and byte sizes stay far below overflow.
constexpr uint64_t kMaxTensorBytes = uint64_t{1} << 60;

absl::Status CorruptFile(std::string_view file_name, std::string_view message) {
  return absl::DataLossError(StrCat(file_name, ": ", message));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// A JSON integer >= 0 (as nlohmann stores non-negative numbers).
bool AsNonNegativeInteger(const json& value, uint64_t& number) {
  if (!value.is_number_unsigned()) {
    if (value.is_number_integer() && value.get<int64_t>() >= 0) {
      number = static_cast<uint64_t>(value.get<int64_t>());
      return true;
    }
    return false;
  }
  number = value.get<uint64_t>();
  return true;
}

absl::Status ParseMetadata(const json& value, std::string_view file_name,
                           std::map<std::string, std::string>* metadata) {
  if (!value.is_object()) {
    return CorruptFile(
        file_name,
        StrCat("\"", kMetadataKey, "\" must be an object of strings, got ",
               DescribeJson(value)));
  }
  for (const auto& [key, entry] : value.items()) {
    if (!entry.is_string()) {
      return CorruptFile(
          file_name, StrCat("\"", kMetadataKey, "\" entry \"", key,
                            "\" must be a string, got ", DescribeJson(entry)));
    }
    if (metadata != nullptr) (*metadata)[key] = entry.get<std::string>();
  }
  return absl::OkStatus();
}

// Checks one header entry; `data` is the data section.
absl::StatusOr<SafetensorsTensor> ParseTensorEntry(
    const std::string& name, const json& entry, std::span<const std::byte> data,
    uint64_t data_start, std::string_view file_name) {
  const std::string tensor = StrCat("tensor \"", name, "\"");
  if (!entry.is_object()) {
    return CorruptFile(file_name, StrCat(tensor,
                                         " must be an object with dtype, "
                                         "shape and data_offsets, got ",
                                         DescribeJson(entry)));
  }
  SafetensorsTensor result;
  result.name = name;

  auto dtype = entry.find("dtype");
  if (dtype == entry.end() || !dtype->is_string()) {
    return CorruptFile(file_name, StrCat(tensor, " has no string \"dtype\""));
  }
  result.dtype = dtype->get<std::string>();
  const int element_size = SafetensorsDtypeSize(result.dtype);
  if (element_size == 0) {
    return CorruptFile(
        file_name, StrCat(tensor, " has unknown dtype \"", result.dtype, "\""));
  }

  auto shape = entry.find("shape");
  if (shape == entry.end() || !shape->is_array()) {
    return CorruptFile(file_name, StrCat(tensor, " has no \"shape\" array"));
  }
  uint64_t num_elements = 1;
  for (const json& dimension : *shape) {
    uint64_t size = 0;
    if (!AsNonNegativeInteger(dimension, size)) {
      return CorruptFile(file_name,
                         StrCat(tensor, " has shape ", DescribeJson(*shape),
                                "; sizes must be integers >= 0"));
    }
    if (size > kMaxTensorBytes ||
        (size != 0 && num_elements > kMaxTensorBytes / size)) {
      return CorruptFile(file_name,
                         StrCat(tensor, " has shape ", DescribeJson(*shape),
                                ", too large to be real"));
    }
    num_elements *= size;
    result.shape.push_back(static_cast<int64_t>(size));
  }
  if (num_elements > kMaxTensorBytes / element_size) {
    return CorruptFile(file_name,
                       StrCat(tensor, " has shape ", DescribeJson(*shape),
                              ", too large to be real"));
  }
  result.num_elements = static_cast<int64_t>(num_elements);

  auto offsets = entry.find("data_offsets");
  uint64_t begin = 0;
  uint64_t end = 0;
  if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
      !AsNonNegativeInteger((*offsets)[0], begin) ||
      !AsNonNegativeInteger((*offsets)[1], end) || begin > end) {
    return CorruptFile(
        file_name,
        StrCat(tensor,
               " must have \"data_offsets\" [begin, end] with "
               "0 <= begin <= end, got ",
               offsets == entry.end() ? "none" : DescribeJson(*offsets)));
  }
  if (end > data.size()) {
    return CorruptFile(
        file_name,
        StrCat(tensor, " has data_offsets [", begin, ", ", end,
               "] beyond the end of the data section (", data.size(),
               " bytes): the file is truncated or the header is wrong"));
  }
  const uint64_t expected_bytes = num_elements * element_size;
  if (end - begin != expected_bytes) {
    return CorruptFile(
        file_name,
        StrCat(tensor, " has ", end - begin, " bytes of data (offsets [", begin,
               ", ", end, "]), but ", result.dtype, " ",
               ShapeString(result.shape), " needs ", expected_bytes));
  }
  result.file_offset = data_start + begin;
  result.bytes = data.subspan(begin, end - begin);
  return result;
}

}  // namespace

int SafetensorsDtypeSize(std::string_view dtype) {
  static constexpr std::pair<std::string_view, int> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8},
  };
  for (const auto& [name, size] : kSizes) {
    if (name == dtype) return size;
  }
  return 0;
}

absl::StatusOr<std::vector<SafetensorsTensor>> ParseSafetensors(
    std::span<const std::byte> contents, std::string_view file_name,
    std::map<std::string, std::string>* metadata) {
  if (contents.size() < kHeaderLengthBytes) {
    return CorruptFile(file_name,
                       StrCat("the file is ", contents.size(),
                              " bytes, too short for the 8-byte header "
                              "length"));
  }
  uint64_t header_length = 0;
  for (size_t i = 0; i < kHeaderLengthBytes; ++i) {
    header_length |= static_cast<uint64_t>(contents[i]) << (8 * i);
  }
  if (header_length > contents.size() - kHeaderLengthBytes) {
    return CorruptFile(
        file_name, StrCat("header length ", header_length,
                          " exceeds the file (", contents.size(), " bytes)"));
  }
  const std::string_view header_text(
      reinterpret_cast<const char*>(contents.data()) + kHeaderLengthBytes,
      header_length);
  TVQ_ASSIGN_OR_RETURN(json header,
                       ParseStrictJson(header_text, absl::StatusCode::kDataLoss,
                                       StrCat(file_name, ": the header")));
  if (!header.is_object()) {
    return CorruptFile(
        file_name,
        StrCat("the header must be a JSON object, got ", JsonTypeName(header)));
  }
  const uint64_t data_start = kHeaderLengthBytes + header_length;
  const std::span<const std::byte> data = contents.subspan(data_start);

  std::vector<SafetensorsTensor> tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      TVQ_RETURN_IF_ERROR(ParseMetadata(entry, file_name, metadata));
      continue;
    }
    TVQ_ASSIGN_OR_RETURN(
        SafetensorsTensor tensor,
        ParseTensorEntry(name, entry, data, data_start, file_name));
    tensors.push_back(std::move(tensor));
  }

  // No two non-empty ranges may share a byte.
  std::vector<const SafetensorsTensor*> by_offset;
  for (const SafetensorsTensor& tensor : tensors) {
    if (!tensor.bytes.empty()) by_offset.push_back(&tensor);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const SafetensorsTensor* a, const SafetensorsTensor* b) {
              return a->file_offset < b->file_offset;
            });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SafetensorsTensor& previous = *by_offset[i - 1];
    const SafetensorsTensor& current = *by_offset[i];
    const uint64_t previous_end = previous.file_offset + previous.bytes.size();
    if (current.file_offset < previous_end) {
      return CorruptFile(
          file_name,
          StrCat("tensors \"", previous.name, "\" and \"", current.name,
                 "\" overlap: data_offsets [",
                 previous.file_offset - data_start, ", ",
                 previous_end - data_start, "] and [",
                 current.file_offset - data_start, ", ",
                 current.file_offset - data_start + current.bytes.size(), "]"));
    }
  }
  return tensors;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
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
  if (::fstat(descriptor, &file_status) != 0) {
    const int error = errno;
    ::close(descriptor);
    return absl::ErrnoToStatus(error, StrCat(path, ": cannot stat"));
  }
  if (!S_ISREG(file_status.st_mode)) {
    ::close(descriptor);
    return absl::InvalidArgumentError(StrCat(path, ": is not a regular file"));
  }

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_size_ = static_cast<size_t>(file_status.st_size);
  if (file->mapping_size_ > 0) {
    void* mapping = ::mmap(nullptr, file->mapping_size_, PROT_READ, MAP_PRIVATE,
                           descriptor, 0);
    if (mapping == MAP_FAILED) {
      const int error = errno;
      ::close(descriptor);
      return absl::ErrnoToStatus(error, StrCat(path, ": cannot mmap"));
    }
    file->mapping_ = mapping;
  }
  ::close(descriptor);
  TVQ_ASSIGN_OR_RETURN(file->tensors_, ParseSafetensors(file->contents(), path,
                                                        &file->metadata_));
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

std::span<const std::byte> SafetensorsFile::contents() const {
  if (mapping_ == nullptr) return {};
  return {static_cast<const std::byte*>(mapping_), mapping_size_};
}

const SafetensorsTensor* SafetensorsFile::Find(std::string_view name) const {
  auto it = std::lower_bound(
      tensors_.begin(), tensors_.end(), name,
      [](const SafetensorsTensor& tensor, std::string_view wanted) {
        return tensor.name < wanted;
      });
  if (it == tensors_.end() || it->name != name) return nullptr;
  return &*it;
}

}  // namespace tvq::runtime
