#include "server/core/model_info.h"

#include <string>
#include <string_view>

namespace tvq::core {

std::string ModelName(std::string_view path) {
  std::string name(path);
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  return name.substr(name.rfind('/') + 1);
}

const char* TokenizerKindName(runtime::TokenizerKind kind) {
  switch (kind) {
    case runtime::TokenizerKind::kByte:
      return "byte";
    case runtime::TokenizerKind::kSentencePiece:
      return "sentencepiece";
  }
  return "sentencepiece";
}

}  // namespace tvq::core
