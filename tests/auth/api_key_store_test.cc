// ApiKeyStore (server/auth/api_key_store.h): the key file's format, hashed
// keys, the Bearer header, reloads that keep the old keys on error, and
// errors that never contain a key.
#include "server/auth/api_key_store.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace tvq::auth {
namespace {

constexpr char kKey[] = "plain-key-0123456789";
constexpr char kHashedKey[] = "hashed-key-0123456789";
// sha256("hashed-key-0123456789"), as `printf %s KEY | sha256sum` prints it.
constexpr char kHashedLine[] =
    "sha256:62c5559717da6012427d84b732fdf7292e3426e5a620fd08af73ebf6300f6d91";

class KeyFile {
 public:
  KeyFile() {
    char path[] = "/tmp/tvq-api-keys-XXXXXX";
    const int fd = ::mkstemp(path);
    ::close(fd);
    path_ = path;
  }
  ~KeyFile() { std::remove(path_.c_str()); }
  void Write(const std::string& text) {
    std::ofstream(path_, std::ios::trunc) << text;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ApiKeyStoreTest, PlainAndHashedKeysCommentsAndBlankLines) {
  KeyFile file;
  file.Write(std::string("# keys of the test\n\n  ") + kKey + "  \n" +
             kHashedLine + "\r\n# the end\n");
  absl::StatusOr<std::unique_ptr<ApiKeyStore>> store =
      ApiKeyStore::Load(file.path());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->size(), 2);
  EXPECT_EQ((*store)->CheckKey(kKey), KeyCheck::kAccepted);
  EXPECT_EQ((*store)->CheckKey(kHashedKey), KeyCheck::kAccepted);
  // The hashed line itself is no key.
  EXPECT_EQ((*store)->CheckKey(kHashedLine), KeyCheck::kInvalid);
  EXPECT_EQ((*store)->CheckKey("plain-key-012345678"), KeyCheck::kInvalid);
  EXPECT_EQ((*store)->CheckKey(""), KeyCheck::kMissing);
}

TEST(ApiKeyStoreTest, BearerHeader) {
  ApiKeyStore store({Sha256(kKey)});
  EXPECT_EQ(store.CheckAuthorization(std::string("Bearer ") + kKey),
            KeyCheck::kAccepted);
  EXPECT_EQ(store.CheckAuthorization(std::string("bearer   ") + kKey + " "),
            KeyCheck::kAccepted);
  EXPECT_EQ(store.CheckAuthorization(""), KeyCheck::kMissing);
  EXPECT_EQ(store.CheckAuthorization("Bearer "), KeyCheck::kMissing);
  EXPECT_EQ(store.CheckAuthorization(kKey), KeyCheck::kInvalid);
  EXPECT_EQ(store.CheckAuthorization(std::string("Basic ") + kKey),
            KeyCheck::kInvalid);
  EXPECT_EQ(store.CheckAuthorization("Bearer wrong-key-0123456789"),
            KeyCheck::kInvalid);
}

TEST(ApiKeyStoreTest, BadFilesNameTheLineAndNeverTheKey) {
  struct Case {
    std::string text;
    std::string expected;
  };
  const Case cases[] = {
      {"# only a comment\n", "holds no key"},
      {std::string(kKey) + "\nshort\n", "line 2: a key must have 16 to 512"},
      {"sha256:abcd\n", "line 1: a hashed key must be"},
      {"sha256:" + std::string(64, 'g') + "\n", "64 hex digits"},
      {"two keys-0123456789 here-0123456789\n",
       "line 1: a key must be printable ASCII without spaces"},
  };
  for (const Case& c : cases) {
    const absl::StatusOr<std::vector<KeyDigest>> parsed =
        ParseApiKeys(c.text, "keys.txt");
    ASSERT_FALSE(parsed.ok()) << c.text;
    EXPECT_NE(parsed.status().message().find(c.expected), std::string::npos)
        << parsed.status();
    EXPECT_NE(parsed.status().message().find("keys.txt"), std::string::npos);
    EXPECT_EQ(parsed.status().message().find("0123456789"), std::string::npos)
        << "the error shows a key: " << parsed.status();
  }
  EXPECT_FALSE(ApiKeyStore::Load("/nonexistent/keys.txt").ok());
}

TEST(ApiKeyStoreTest, ReloadReplacesTheKeysOrKeepsThemOnError) {
  KeyFile file;
  file.Write(std::string(kKey) + "\n");
  absl::StatusOr<std::unique_ptr<ApiKeyStore>> loaded =
      ApiKeyStore::Load(file.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ApiKeyStore& store = **loaded;

  file.Write(std::string(kHashedLine) + "\n");  // kKey revoked, one added
  absl::StatusOr<int> reloaded = store.Reload();
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(*reloaded, 1);
  EXPECT_EQ(store.CheckKey(kKey), KeyCheck::kInvalid);
  EXPECT_EQ(store.CheckKey(kHashedKey), KeyCheck::kAccepted);

  file.Write("not a key\n");
  EXPECT_FALSE(store.Reload().ok());
  EXPECT_EQ(store.CheckKey(kHashedKey), KeyCheck::kAccepted);
  std::remove(file.path().c_str());
  EXPECT_FALSE(store.Reload().ok());
  EXPECT_EQ(store.CheckKey(kHashedKey), KeyCheck::kAccepted);
  EXPECT_EQ(store.size(), 1);
}

TEST(ApiKeyStoreTest, FingerprintIsAShortHashPrefix) {
  EXPECT_EQ(KeyFingerprint(kHashedKey), "62c55597");
  EXPECT_EQ(std::string(KeyCheckName(KeyCheck::kMissing)), "missing");
  EXPECT_EQ(std::string(KeyCheckName(KeyCheck::kInvalid)), "invalid");
}

}  // namespace
}  // namespace tvq::auth
