// The routing contract's session key (server/service/routing/session_key.h):
// which header wins, what is refused, how a header meets a body field.
#include "server/service/routing/session_key.h"

#include <map>
#include <optional>
#include <string>

#include "gtest/gtest.h"

namespace tvq::service::routing {
namespace {

using Headers = std::map<std::string, std::string, std::less<>>;

absl::StatusOr<std::optional<SessionKey>> Find(const Headers& headers) {
  return FindSessionKey([&headers](std::string_view name) {
    const auto found = headers.find(name);
    return found == headers.end() ? std::string_view()
                                  : std::string_view(found->second);
  });
}

TEST(SessionKeyTest, NoHeaderNoKey) {
  absl::StatusOr<std::optional<SessionKey>> key = Find({{"x-other", "a"}});
  ASSERT_TRUE(key.ok());
  EXPECT_FALSE(key->has_value());
}

TEST(SessionKeyTest, XSessionIdWinsThenAliasesInOrder) {
  absl::StatusOr<std::optional<SessionKey>> key =
      Find({{"session_id", "codex"}, {"x-session-id", "main"}});
  ASSERT_TRUE(key.ok() && key->has_value());
  EXPECT_EQ((*key)->value, "main");
  EXPECT_EQ((*key)->header, "x-session-id");

  key = Find({{"session_id", "codex"}, {"x-dynamo-session-id", "dyn"}});
  ASSERT_TRUE(key.ok() && key->has_value());
  EXPECT_EQ((*key)->value, "dyn");

  // An empty value counts as absent.
  key = Find({{"x-session-id", ""}, {"session-id", "codex"}});
  ASSERT_TRUE(key.ok() && key->has_value());
  EXPECT_EQ((*key)->value, "codex");
  EXPECT_EQ((*key)->header, "session-id");
}

TEST(SessionKeyTest, InvalidValueNamesTheHeader) {
  absl::StatusOr<std::optional<SessionKey>> key =
      Find({{"x-claude-code-session-id", "has space"}});
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(key.status().message().find("the x-claude-code-session-id header"),
            std::string_view::npos)
      << key.status();
  EXPECT_FALSE(Find({{"x-session-id", std::string(129, 'a')}}).ok());
}

TEST(SessionKeyTest, CombinesWithTheBodyField) {
  const std::optional<SessionKey> none;
  const std::optional<SessionKey> key = SessionKey{"x-session-id", "a"};
  EXPECT_EQ(*CombineSessionId(none, "", "session_id"), "");
  EXPECT_EQ(*CombineSessionId(none, "b", "session_id"), "b");
  EXPECT_EQ(*CombineSessionId(key, "", "session_id"), "a");
  EXPECT_EQ(*CombineSessionId(key, "a", "session_id"), "a");
  absl::StatusOr<std::string> differ = CombineSessionId(key, "b", "session_id");
  ASSERT_FALSE(differ.ok());
  EXPECT_EQ(differ.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(differ.status().message(),
            "the x-session-id header names session \"a\" but session_id is "
            "\"b\": send one of them, or the same id in both");
}

}  // namespace
}  // namespace tvq::service::routing
