#include "server/engine/state_pool.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_format.h"
#include "server/base/status_macros.h"

namespace tvq::runtime {
namespace {

constexpr char kExportMagic[8] = {'T', 'V', 'Q', 'S', 'T', 'A', 'T', 'E'};
// The version names the state dtype of the arrays that follow.
constexpr uint32_t kExportVersionF32 = 1;
constexpr uint32_t kExportVersionBF16 = 2;

uint32_t ExportVersion(DType state_dtype) {
  return state_dtype == DType::kBF16 ? kExportVersionBF16 : kExportVersionF32;
}

// The fixed-size header of an exported slot.
struct ExportHeader {
  char magic[8];
  uint32_t version;
  uint32_t num_sublayers;
  uint32_t n_head;
  uint32_t n_code;
  uint32_t mem_len;
  uint32_t d_v;
  int64_t position;
};

struct SlotSizes {
  size_t counts, means, window_codes, window_values;  // elements per slot
};

SlotSizes SizesFor(const ModelConfig& config) {
  const size_t H = config.n_head, S = config.n_code, M = config.mem_len,
               dv = config.d_v;
  return {H * S, H * S * dv, H * M, H * M * dv};
}

// Checks what an import could otherwise turn into out-of-range reads or
// NaNs: window codes in [-1, S), counts finite and >= 0, values finite.
absl::Status ValidateExportedArrays(const ModelConfig& config,
                                    DType state_dtype, const char* arrays) {
  const SlotSizes sizes = SizesFor(config);
  const char* cursor = arrays;
  auto check_floats = [&](size_t count, DType dtype, const char* field,
                          int sublayer, bool non_negative) -> absl::Status {
    const size_t element = DTypeSize(dtype);
    for (size_t i = 0; i < count; ++i) {
      float value;
      if (dtype == DType::kBF16) {
        BFloat16 bits;
        std::memcpy(&bits, cursor + element * i, element);
        value = BF16ToF32(bits);
      } else {
        std::memcpy(&value, cursor + element * i, element);
      }
      if (!std::isfinite(value) || (non_negative && value < 0)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "state import: sublayer %d %s[%d] = %g is invalid", sublayer,
            field, i, value));
      }
    }
    cursor += element * count;
    return absl::OkStatus();
  };
  for (int sublayer = 0; sublayer < config.num_sublayers(); ++sublayer) {
    TVQ_RETURN_IF_ERROR(
        check_floats(sizes.counts, DType::kF32, "count", sublayer, true));
    TVQ_RETURN_IF_ERROR(
        check_floats(sizes.means, state_dtype, "mean", sublayer, false));
    for (size_t i = 0; i < sizes.window_codes; ++i) {
      int32_t code;
      std::memcpy(&code, cursor + 4 * i, 4);
      if (code < -1 || code >= config.n_code) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "state import: sublayer %d window code[%d] = %d outside [-1, %d)",
            sublayer, i, code, config.n_code));
      }
    }
    cursor += 4 * sizes.window_codes;
    TVQ_RETURN_IF_ERROR(check_floats(sizes.window_values, state_dtype,
                                     "window value", sublayer, false));
  }
  return absl::OkStatus();
}

}  // namespace

size_t StatePool::BytesPerSlotFor(const ModelConfig& config,
                                  DType state_dtype) {
  const SlotSizes sizes = SizesFor(config);
  return sizeof(int64_t) +
         static_cast<size_t>(config.num_sublayers()) *
             (sizeof(float) * sizes.counts +
              DTypeSize(state_dtype) * (sizes.means + sizes.window_values) +
              sizeof(int32_t) * sizes.window_codes);
}

StatePool::StatePool(const ModelConfig& config, Backend& backend,
                     int num_slots, DType state_dtype)
    : shape_config_(config),
      backend_(backend),
      num_slots_(num_slots),
      state_dtype_(state_dtype),
      positions_(num_slots, 0) {}

absl::StatusOr<std::unique_ptr<StatePool>> StatePool::Create(
    const ModelConfig& config, Backend& backend, int num_slots,
    DType state_dtype) {
  if (num_slots < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("state pool: num_slots must be >= 1, got %d", num_slots));
  }
  if (state_dtype != DType::kF32 && state_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrFormat("state pool: the state dtype must be F32 or BF16, got %s",
                        DTypeName(state_dtype)));
  }
  std::unique_ptr<StatePool> pool(
      new StatePool(config, backend, num_slots, state_dtype));
  const SlotSizes sizes = SizesFor(config);
  const size_t element = DTypeSize(state_dtype);
  for (int sublayer = 0; sublayer < config.num_sublayers(); ++sublayer) {
    TVQ_ASSIGN_OR_RETURN(DeviceBuffer counts,
                         backend.Allocate(sizeof(float) * sizes.counts * num_slots));
    TVQ_ASSIGN_OR_RETURN(DeviceBuffer means,
                         backend.Allocate(element * sizes.means * num_slots));
    TVQ_ASSIGN_OR_RETURN(
        DeviceBuffer window_codes,
        backend.Allocate(sizeof(int32_t) * sizes.window_codes * num_slots));
    TVQ_ASSIGN_OR_RETURN(
        DeviceBuffer window_values,
        backend.Allocate(element * sizes.window_values * num_slots));
    pool->counts_.push_back(std::move(counts));
    pool->means_.push_back(std::move(means));
    pool->window_codes_.push_back(std::move(window_codes));
    pool->window_values_.push_back(std::move(window_values));
  }
  for (int slot = 0; slot < num_slots; ++slot) {
    TVQ_RETURN_IF_ERROR(pool->Reset(slot));
  }
  return pool;
}

absl::Status StatePool::CheckSlot(int slot, const char* what) const {
  if (slot < 0 || slot >= num_slots_) {
    return absl::OutOfRangeError(absl::StrFormat(
        "state pool: %s slot %d outside [0, %d)", what, slot, num_slots_));
  }
  return absl::OkStatus();
}

SublayerState StatePool::Sublayer(int sublayer) const {
  SublayerState state;
  state.counts = counts_[sublayer].as<float>();
  state.means = means_[sublayer].as<float>();
  state.window_codes = window_codes_[sublayer].as<int32_t>();
  state.window_values = window_values_[sublayer].as<float>();
  state.dtype = state_dtype_;
  state.num_slots = num_slots();
  return state;
}

std::vector<StatePool::SlotArray> StatePool::SlotArrays(int slot) const {
  const SlotSizes sizes = SizesFor(shape_config_);
  std::vector<SlotArray> arrays;
  arrays.reserve(4 * shape_config_.num_sublayers());
  const size_t element = DTypeSize(state_dtype_);
  for (int sublayer = 0; sublayer < shape_config_.num_sublayers(); ++sublayer) {
    const SublayerState state = Sublayer(sublayer);
    arrays.push_back({reinterpret_cast<char*>(state.counts + slot * sizes.counts),
                      sizeof(float) * sizes.counts, false, DType::kF32});
    arrays.push_back({reinterpret_cast<char*>(state.means) +
                          element * slot * sizes.means,
                      element * sizes.means, false, state_dtype_});
    arrays.push_back(
        {reinterpret_cast<char*>(state.window_codes + slot * sizes.window_codes),
         sizeof(int32_t) * sizes.window_codes, true, DType::kI32});
    arrays.push_back({reinterpret_cast<char*>(state.window_values) +
                          element * slot * sizes.window_values,
                      element * sizes.window_values, false, state_dtype_});
  }
  return arrays;
}

absl::Status StatePool::Reset(int slot) {
  TVQ_RETURN_IF_ERROR(CheckSlot(slot, "reset"));
  for (const SlotArray& array : SlotArrays(slot)) {
    if (array.is_window_codes) {
      TVQ_RETURN_IF_ERROR(backend_.FillInt(reinterpret_cast<int32_t*>(array.data),
                                           array.bytes / sizeof(int32_t), -1));
    } else if (array.bytes % sizeof(float) == 0 &&
               reinterpret_cast<uintptr_t>(array.data) % alignof(float) == 0) {
      // Zero bits are 0.0 in F32 and BF16 alike.
      TVQ_RETURN_IF_ERROR(backend_.Fill(reinterpret_cast<float*>(array.data),
                                        array.bytes / sizeof(float), 0.0f));
    } else {  // a BF16 array of odd length: copy zeros from the host
      const std::string zeros(array.bytes, '\0');
      TVQ_RETURN_IF_ERROR(
          backend_.CopyToDevice(array.data, zeros.data(), array.bytes));
    }
  }
  positions_[slot] = 0;
  return absl::OkStatus();
}

absl::Status StatePool::Copy(int source, int destination) {
  TVQ_RETURN_IF_ERROR(CheckSlot(source, "copy source"));
  TVQ_RETURN_IF_ERROR(CheckSlot(destination, "copy destination"));
  if (source == destination) return absl::OkStatus();
  const std::vector<SlotArray> from = SlotArrays(source);
  const std::vector<SlotArray> to = SlotArrays(destination);
  for (size_t i = 0; i < from.size(); ++i) {
    TVQ_RETURN_IF_ERROR(
        backend_.CopyOnDevice(to[i].data, from[i].data, from[i].bytes));
  }
  positions_[destination] = positions_[source];
  return absl::OkStatus();
}

absl::StatusOr<std::string> StatePool::Export(int slot) const {
  TVQ_RETURN_IF_ERROR(CheckSlot(slot, "export"));
  ExportHeader header;
  std::memcpy(header.magic, kExportMagic, sizeof(kExportMagic));
  header.version = ExportVersion(state_dtype_);
  header.num_sublayers = shape_config_.num_sublayers();
  header.n_head = shape_config_.n_head;
  header.n_code = shape_config_.n_code;
  header.mem_len = shape_config_.mem_len;
  header.d_v = shape_config_.d_v;
  header.position = positions_[slot];
  std::string bytes(sizeof(header) + BytesPerSlot() - sizeof(int64_t), '\0');
  std::memcpy(bytes.data(), &header, sizeof(header));
  char* cursor = bytes.data() + sizeof(header);
  for (const SlotArray& array : SlotArrays(slot)) {
    TVQ_RETURN_IF_ERROR(backend_.CopyToHost(cursor, array.data, array.bytes));
    cursor += array.bytes;
  }
  return bytes;
}

absl::Status StatePool::Import(int slot, const std::string& bytes) {
  TVQ_RETURN_IF_ERROR(CheckSlot(slot, "import"));
  TVQ_RETURN_IF_ERROR(ValidateExport(bytes));
  ExportHeader header;
  std::memcpy(&header, bytes.data(), sizeof(header));
  const char* cursor = bytes.data() + sizeof(header);
  for (const SlotArray& array : SlotArrays(slot)) {
    TVQ_RETURN_IF_ERROR(backend_.CopyToDevice(array.data, cursor, array.bytes));
    cursor += array.bytes;
  }
  positions_[slot] = header.position;
  return absl::OkStatus();
}

int64_t StatePool::ExportedPosition(const std::string& bytes) {
  ExportHeader header;
  if (bytes.size() < sizeof(header)) return -1;
  std::memcpy(&header, bytes.data(), sizeof(header));
  return header.position;
}

size_t StatePool::ExportBytes() const {
  return sizeof(ExportHeader) + BytesPerSlot() - sizeof(int64_t);
}

absl::Status StatePool::CheckHeader(const std::string& bytes) const {
  ExportHeader header;
  if (bytes.size() < sizeof(header)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("state import: %d bytes, expected %d for this model",
                        bytes.size(), ExportBytes()));
  }
  std::memcpy(&header, bytes.data(), sizeof(header));
  if (std::memcmp(header.magic, kExportMagic, sizeof(kExportMagic)) != 0 ||
      (header.version != kExportVersionF32 &&
       header.version != kExportVersionBF16)) {
    return absl::InvalidArgumentError(
        "state import: not a tvq state export (bad magic or version)");
  }
  if (header.version != ExportVersion(state_dtype_)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "state import: the export holds %s state, this server keeps %s state "
        "(--state-dtype)",
        header.version == kExportVersionBF16 ? "BF16" : "F32",
        DTypeName(state_dtype_)));
  }
  if (bytes.size() != ExportBytes()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("state import: %d bytes, expected %d for this model",
                        bytes.size(), ExportBytes()));
  }
  if (header.num_sublayers !=
          static_cast<uint32_t>(shape_config_.num_sublayers()) ||
      header.n_head != static_cast<uint32_t>(shape_config_.n_head) ||
      header.n_code != static_cast<uint32_t>(shape_config_.n_code) ||
      header.mem_len != static_cast<uint32_t>(shape_config_.mem_len) ||
      header.d_v != static_cast<uint32_t>(shape_config_.d_v) ||
      header.position < 0) {
    return absl::InvalidArgumentError(
        "state import: the export was made for a model of another shape");
  }
  return absl::OkStatus();
}

absl::Status StatePool::ValidateExport(const std::string& bytes) const {
  TVQ_RETURN_IF_ERROR(CheckHeader(bytes));
  return ValidateExportedArrays(shape_config_, state_dtype_,
                                bytes.data() + sizeof(ExportHeader));
}

}  // namespace tvq::runtime
