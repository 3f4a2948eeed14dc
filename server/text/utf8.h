// UTF-8 validity (shortest forms only, no surrogates, at most U+10FFFF).
#ifndef TVQ_SERVER_TEXT_UTF8_H_
#define TVQ_SERVER_TEXT_UTF8_H_

#include <string_view>

namespace tvq::runtime {

bool IsValidUtf8(std::string_view text);

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_TEXT_UTF8_H_
