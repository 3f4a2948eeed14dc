// A fixed number of decode-state slots, allocated once in backend memory.
//
// Per slot and per attention sublayer (spec §3): count [H, S] (always
// float32), mean [H, S, d_v], window codes [H, M] (int32, -1 = empty) and
// window values [H, M, d_v], means and window values of the pool's state
// dtype (F32, or BF16 with e = 2 bytes); plus one position per slot. The size
// never depends on how many tokens a slot has absorbed:
//   BytesPerSlot = 8 + num_sublayers * H * (4*S + e*S*d_v + 4*M + e*M*d_v)
// with e = 4 for F32 and 2 for BF16.
#ifndef TVQ_SERVER_ENGINE_STATE_POOL_H_
#define TVQ_SERVER_ENGINE_STATE_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/backend/backend.h"
#include "server/model/model_config.h"

namespace tvq::runtime {

class StatePool {
 public:
  // Allocates `num_slots` slots for `config` on `backend`; every slot starts
  // empty (position 0).
  // `state_dtype`: F32 or BF16 (InvalidArgument otherwise; the backend's
  // ops refuse a dtype they do not run).
  static absl::StatusOr<std::unique_ptr<StatePool>> Create(
      const ModelConfig& config, Backend& backend, int num_slots,
      DType state_dtype = DType::kF32);
  // Bytes one slot occupies for `config` (the formula above).
  static size_t BytesPerSlotFor(const ModelConfig& config,
                                DType state_dtype = DType::kF32);

  int num_slots() const { return num_slots_; }
  DType state_dtype() const { return state_dtype_; }
  size_t BytesPerSlot() const {
    return BytesPerSlotFor(shape_config_, state_dtype_);
  }
  size_t TotalBytes() const { return BytesPerSlot() * num_slots_; }

  // Tokens absorbed by `slot` = position of its next token.
  int64_t position(int slot) const { return positions_[slot]; }
  void set_position(int slot, int64_t position) { positions_[slot] = position; }

  // Empties a slot (position 0, no window, zero counts).
  absl::Status Reset(int slot);
  // Copies the whole state of `source` into `destination` (fork).
  absl::Status Copy(int source, int destination);
  // Serializes one slot's state (self-describing header + raw arrays; the
  // header's version says the state dtype: 1 = F32, 2 = BF16, and an import
  // into a pool of the other dtype is refused with a message saying so).
  absl::StatusOr<std::string> Export(int slot) const;
  // Restores a state produced by Export for the same model shape.
  absl::Status Import(int slot, const std::string& bytes);
  // The checks Import makes, without touching any slot: the size, the
  // header (magic, version, shape, position >= 0) and the arrays (codes in
  // range, finite values, counts >= 0). Thread-safe (reads the shape only).
  absl::Status ValidateExport(const std::string& bytes) const;
  // The position recorded in an export that ValidateExport accepted.
  static int64_t ExportedPosition(const std::string& bytes);
  // Bytes Export produces for one slot of this pool.
  size_t ExportBytes() const;

  // The state of every slot for one sublayer, in backend memory.
  SublayerState Sublayer(int sublayer) const;

 private:
  StatePool(const ModelConfig& config, Backend& backend, int num_slots,
            DType state_dtype);
  absl::Status CheckHeader(const std::string& bytes) const;
  absl::Status CheckSlot(int slot, const char* what) const;
  // One slot's arrays in backend memory, in export order: per sublayer
  // counts, means, window codes, window values.
  struct SlotArray {
    char* data;
    size_t bytes;
    bool is_window_codes;  // int32, empty = -1
    DType dtype;           // kI32, kF32 (counts) or the state dtype
  };
  std::vector<SlotArray> SlotArrays(int slot) const;

  ModelConfig shape_config_;
  Backend& backend_;
  int num_slots_;
  DType state_dtype_;
  std::vector<int64_t> positions_;
  // One allocation per sublayer and field.
  std::vector<DeviceBuffer> counts_, means_, window_codes_, window_values_;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_ENGINE_STATE_POOL_H_
