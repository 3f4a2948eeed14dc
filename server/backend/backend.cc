#include "server/backend/backend.h"

namespace tvq::runtime {

const char* OpName(Op op) {
  switch (op) {
    case Op::kUploadWeights:
      return "UploadWeights";
    case Op::kGemm:
      return "Gemm";
    case Op::kEmbed:
      return "Embed";
    case Op::kRmsNorm:
      return "RmsNorm";
    case Op::kHeadRmsNorm:
      return "HeadRmsNorm";
    case Op::kSilu:
      return "Silu";
    case Op::kSquaredRelu:
      return "SquaredRelu";
    case Op::kMultiply:
      return "Multiply";
    case Op::kVqAssign:
      return "VqAssign";
    case Op::kBlockAttention:
      return "BlockAttention";
    case Op::kDecodeAttention:
      return "DecodeAttention";
    case Op::kUpdateState:
      return "UpdateState";
    case Op::kUpdateStateBatch:
      return "UpdateStateBatch";
    case Op::kLogSoftmax:
      return "LogSoftmax";
  }
  return "unknown op";
}

}  // namespace tvq::runtime
