#include "server/sessions/session_disk.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "server/base/status_macros.h"

namespace tvq::sessions {
namespace {

constexpr char kDiskMagic[8] = {'T', 'V', 'Q', 'S', 'D', 'I', 'S', 'K'};
constexpr uint32_t kDiskVersion = 1;
constexpr size_t kFixed = 36;
constexpr char kSuffix[] = ".tvqsession";
constexpr char kTemporary[] = ".tmp-";

void PutU32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>(value >> (8 * i)));
}
void PutU64(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>(value >> (8 * i)));
}
uint64_t Get(const std::string& in, size_t offset, int width) {
  uint64_t value = 0;
  for (int i = width - 1; i >= 0; --i) {
    value = (value << 8) | static_cast<unsigned char>(in[offset + i]);
  }
  return value;
}
uint32_t Crc32(const char* data, size_t size) {
  return static_cast<uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(data), static_cast<uInt>(size)));
}

absl::Status Errno(std::string_view what, const std::string& path) {
  return absl::UnavailableError(
      absl::StrFormat("%s %s: %s", what, path, std::strerror(errno)));
}

// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync
// of the directory.
absl::Status WriteAtomically(const std::string& directory,
                             const std::string& path,
                             const std::string& bytes) {
  thread_local absl::BitGen generator;
  const std::string temporary = absl::StrFormat(
      "%s%s%016x", path, kTemporary, absl::Uniform<uint64_t>(generator));
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return Errno("cannot create", temporary);
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n =
        ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const absl::Status status = Errno("cannot write", temporary);
      ::close(fd);
      ::unlink(temporary.c_str());
      return status;
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const absl::Status status = Errno("cannot fsync", temporary);
    ::close(fd);
    ::unlink(temporary.c_str());
    return status;
  }
  ::close(fd);
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const absl::Status status = Errno("cannot rename to", path);
    ::unlink(temporary.c_str());
    return status;
  }
  const int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return absl::OkStatus();
}

}  // namespace

SessionDisk::SessionDisk(std::string directory, const BlobIdentity& identity,
                         const runtime::StatePool& pool)
    : directory_(std::move(directory)), identity_(identity), pool_(pool) {}

absl::StatusOr<std::unique_ptr<SessionDisk>> SessionDisk::Open(
    const std::string& directory, const BlobIdentity& identity,
    const runtime::StatePool& pool) {
  std::error_code error;
  std::filesystem::create_directories(directory, error);
  if (error || !std::filesystem::is_directory(directory, error)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--session-dir=%s: not a usable directory (%s)", directory,
        error ? error.message() : "not a directory"));
  }
  return std::unique_ptr<SessionDisk>(
      new SessionDisk(directory, identity, pool));
}

std::string SessionDisk::PathOf(const std::string& session_id) const {
  return (std::filesystem::path(directory_) /
          (absl::BytesToHexString(session_id) + kSuffix))
      .string();
}

absl::Status SessionDisk::Save(const SpilledSession& session) {
  std::string bytes(kDiskMagic, sizeof(kDiskMagic));
  PutU32(bytes, kDiskVersion);
  PutU32(bytes, static_cast<uint32_t>(session.session_id.size()));
  PutU64(bytes, static_cast<uint64_t>(absl::ToInt64Milliseconds(session.ttl)));
  PutU64(bytes, static_cast<uint64_t>(absl::ToUnixMillis(session.last_used)));
  PutU32(bytes, session.pinned ? 1u : 0u);
  bytes += session.session_id;
  bytes += EncodeSessionBlob(session.snapshot, identity_);
  PutU32(bytes, Crc32(bytes.data(), bytes.size()));
  return WriteAtomically(directory_, PathOf(session.session_id), bytes);
}

absl::StatusOr<SpilledSession> SessionDisk::Parse(
    const std::string& path, const std::string& bytes) const {
  const size_t limit = kFixed + 128 + kBlobHeaderBytes + identity_.state_bytes +
                       kBlobChecksumBytes + 4;
  if (bytes.size() > limit) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %d bytes, larger than any session file of this model (%d)", path,
        bytes.size(), limit));
  }
  if (bytes.size() < kFixed + 4 ||
      std::memcmp(bytes.data(), kDiskMagic, sizeof(kDiskMagic)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: not a tvq session file", path));
  }
  const uint32_t version = static_cast<uint32_t>(Get(bytes, 8, 4));
  if (version != kDiskVersion) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: session file version %d is not supported (this server reads %d)",
        path, version, kDiskVersion));
  }
  const size_t body = bytes.size() - 4;
  const uint32_t stored = static_cast<uint32_t>(Get(bytes, body, 4));
  if (stored != Crc32(bytes.data(), body)) {
    return absl::DataLossError(absl::StrFormat(
        "%s: checksum mismatch: the file is corrupted or truncated", path));
  }
  const size_t id_length = static_cast<size_t>(Get(bytes, 12, 4));
  if (id_length < 1 || id_length > 128 || kFixed + id_length > body) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: session id length %d is invalid", path, id_length));
  }
  SpilledSession session;
  session.session_id = bytes.substr(kFixed, id_length);
  TVQ_RETURN_IF_ERROR(SessionStore::CheckId(session.session_id, "session id"));
  if (PathOf(session.session_id) != path) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: holds session \"%s\", whose file has another name",
                        path, session.session_id));
  }
  const int64_t ttl_ms = static_cast<int64_t>(Get(bytes, 16, 8));
  if (ttl_ms <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: ttl %d ms is invalid", path, ttl_ms));
  }
  session.ttl = absl::Milliseconds(ttl_ms);
  session.last_used =
      absl::FromUnixMillis(static_cast<int64_t>(Get(bytes, 24, 8)));
  session.pinned = (Get(bytes, 32, 4) & 1) != 0;
  const std::string_view blob = std::string_view(bytes).substr(
      kFixed + id_length, body - kFixed - id_length);
  absl::StatusOr<SessionSnapshot> snapshot = DecodeSessionBlob(blob, identity_);
  if (!snapshot.ok()) {
    return absl::Status(
        snapshot.status().code(),
        absl::StrFormat("%s: %s", path, snapshot.status().message()));
  }
  if (snapshot->state != nullptr) {
    if (absl::Status status = pool_.ValidateExport(*snapshot->state);
        !status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s", path, status.message()));
    }
    if (runtime::StatePool::ExportedPosition(*snapshot->state) !=
        snapshot->position) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: the header's position disagrees with its state", path));
    }
  }
  session.snapshot = *std::move(snapshot);
  return session;
}

absl::StatusOr<SessionSnapshot> SessionDisk::Load(
    const std::string& session_id) {
  const std::string path = PathOf(session_id);
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::DataLossError(absl::StrFormat("%s: cannot be opened", path));
  }
  std::string bytes((std::istreambuf_iterator<char>(file)),
                    std::istreambuf_iterator<char>());
  absl::StatusOr<SpilledSession> session = Parse(path, bytes);
  if (!session.ok()) return session.status();
  if (session->session_id != session_id) {
    return absl::DataLossError(
        absl::StrFormat("%s: holds another session", path));
  }
  return std::move(session->snapshot);
}

void SessionDisk::Remove(const std::string& session_id) {
  ::unlink(PathOf(session_id).c_str());
}

SessionDisk::ScanResult SessionDisk::Scan() const {
  ScanResult result;
  std::error_code error;
  for (const std::filesystem::directory_entry& entry :
       std::filesystem::directory_iterator(directory_, error)) {
    const std::string path = entry.path().string();
    const std::string name = entry.path().filename().string();
    if (absl::StrContains(name, kTemporary)) {
      // An interrupted write of ours: never complete, never renamed.
      ::unlink(path.c_str());
      result.problems.push_back(absl::StrFormat(
          "%s: removed (a write interrupted before its rename)", path));
      continue;
    }
    if (!absl::EndsWith(name, kSuffix) || !entry.is_regular_file(error)) {
      continue;
    }
    std::ifstream file(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(file)),
                      std::istreambuf_iterator<char>());
    absl::StatusOr<SpilledSession> session = Parse(path, bytes);
    if (!session.ok()) {
      result.problems.push_back(absl::StrFormat(
          "skipped (%s): %s", absl::StatusCodeToString(session.status().code()),
          session.status().message()));
      continue;
    }
    result.sessions.push_back(*std::move(session));
  }
  if (error) {
    result.problems.push_back(
        absl::StrFormat("listing %s: %s", directory_, error.message()));
  }
  return result;
}

}  // namespace tvq::sessions
