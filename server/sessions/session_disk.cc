#include "server/sessions/session_disk.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
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
// Version 2 adds the owner; version 1 files (no owner) are still read.
constexpr uint32_t kDiskVersion = 2;
constexpr uint32_t kDiskVersionWithoutOwner = 1;
// The fixed header of each version (the owner's length is its last field).
constexpr size_t kFixedV1 = 36;
constexpr size_t kFixed = 40;
constexpr size_t kMaxOwnerLength = 64;
constexpr char kSuffix[] = ".tvqsession";
constexpr char kTemporary[] = ".tmp-";
// A file being taken by a server (renamed away from its name, then read).
constexpr char kTaking[] = ".tmp-taking-";

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

std::string RandomSuffix() {
  thread_local absl::BitGen generator;
  return absl::StrFormat("%016x", absl::Uniform<uint64_t>(generator));
}

void FsyncDirectory(const std::string& directory) {
  const int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

// Writes `bytes` to `path` atomically: temporary file (locked with flock
// while it is written, so that another server's start-up scan of a shared
// directory leaves it alone), fsync, rename, fsync of the directory.
absl::Status WriteAtomically(const std::string& directory,
                             const std::string& path,
                             const std::string& bytes) {
  const std::string temporary =
      absl::StrFormat("%s%s%s", path, kTemporary, RandomSuffix());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return Errno("cannot create", temporary);
  ::flock(fd, LOCK_EX);
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
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const absl::Status status = Errno("cannot rename to", path);
    ::unlink(temporary.c_str());
    ::close(fd);
    return status;
  }
  ::close(fd);  // releases the lock
  FsyncDirectory(directory);
  return absl::OkStatus();
}

std::string ReadAll(int fd) {
  std::string bytes;
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    bytes.append(buffer, static_cast<size_t>(n));
  }
  return bytes;
}

// A session file opened for reading; NOT_FOUND when there is none.
absl::StatusOr<int> OpenSessionFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(
          absl::StrFormat("%s: no such file in --session-dir", path));
    }
    return absl::DataLossError(absl::StrFormat("%s: cannot be opened: %s",
                                               path, std::strerror(errno)));
  }
  return fd;
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

absl::StatusOr<int64_t> SessionDisk::Save(const SpilledSession& session) {
  std::string bytes(kDiskMagic, sizeof(kDiskMagic));
  PutU32(bytes, kDiskVersion);
  PutU32(bytes, static_cast<uint32_t>(session.session_id.size()));
  PutU64(bytes, static_cast<uint64_t>(absl::ToInt64Milliseconds(session.ttl)));
  PutU64(bytes, static_cast<uint64_t>(absl::ToUnixMillis(session.last_used)));
  PutU32(bytes, session.pinned ? 1u : 0u);
  PutU32(bytes, static_cast<uint32_t>(session.owner.size()));
  bytes += session.session_id;
  bytes += session.owner;
  bytes += EncodeSessionBlob(session.snapshot, identity_);
  PutU32(bytes, Crc32(bytes.data(), bytes.size()));
  TVQ_RETURN_IF_ERROR(
      WriteAtomically(directory_, PathOf(session.session_id), bytes));
  return static_cast<int64_t>(bytes.size());
}

absl::StatusOr<SpilledSession> SessionDisk::Parse(
    const std::string& path, const std::string& bytes) const {
  const size_t limit = kFixed + 128 + kMaxOwnerLength + kBlobHeaderBytes +
                       identity_.state_bytes + kBlobChecksumBytes + 4;
  if (bytes.size() > limit) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %d bytes, larger than any session file of this model (%d)", path,
        bytes.size(), limit));
  }
  if (bytes.size() < kFixedV1 + 4 ||
      std::memcmp(bytes.data(), kDiskMagic, sizeof(kDiskMagic)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: not a tvq session file", path));
  }
  const uint32_t version = static_cast<uint32_t>(Get(bytes, 8, 4));
  if (version != kDiskVersion && version != kDiskVersionWithoutOwner) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: session file version %d is not supported (this server reads %d "
        "and %d)",
        path, version, kDiskVersionWithoutOwner, kDiskVersion));
  }
  const size_t fixed = version == kDiskVersion ? kFixed : kFixedV1;
  if (bytes.size() < fixed + 4) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: truncated header", path));
  }
  const size_t body = bytes.size() - 4;
  const uint32_t stored = static_cast<uint32_t>(Get(bytes, body, 4));
  if (stored != Crc32(bytes.data(), body)) {
    return absl::DataLossError(absl::StrFormat(
        "%s: checksum mismatch: the file is corrupted or truncated", path));
  }
  const size_t id_length = static_cast<size_t>(Get(bytes, 12, 4));
  if (id_length < 1 || id_length > 128 || fixed + id_length > body) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: session id length %d is invalid", path, id_length));
  }
  const size_t owner_length =
      version == kDiskVersion ? static_cast<size_t>(Get(bytes, 36, 4)) : 0;
  if (owner_length > kMaxOwnerLength ||
      fixed + id_length + owner_length > body) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: owner length %d is invalid (at most %d)", path, owner_length,
        kMaxOwnerLength));
  }
  SpilledSession session;
  session.session_id = bytes.substr(fixed, id_length);
  session.owner = bytes.substr(fixed + id_length, owner_length);
  if (!session.owner.empty()) {
    TVQ_RETURN_IF_ERROR(SessionStore::CheckId(session.owner, "session owner"));
  }
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
  const size_t blob_start = fixed + id_length + owner_length;
  const std::string_view blob =
      std::string_view(bytes).substr(blob_start, body - blob_start);
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

absl::StatusOr<SpilledSession> SessionDisk::Take(
    const std::string& session_id) {
  const std::string path = PathOf(session_id);
  // Lock the file, then rename it to a name only this call knows: of several
  // servers sharing the directory exactly one takes it (rename is atomic),
  // and the lock keeps their start-up scans from removing it meanwhile.
  TVQ_ASSIGN_OR_RETURN(const int fd, OpenSessionFile(path));
  ::flock(fd, LOCK_EX);
  const std::string taking =
      absl::StrFormat("%s%s%s", path, kTaking, RandomSuffix());
  if (::rename(path.c_str(), taking.c_str()) != 0) {
    const int error = errno;
    ::close(fd);
    if (error == ENOENT) {
      return absl::NotFoundError(absl::StrFormat(
          "%s: taken by another server sharing --session-dir", path));
    }
    return absl::DataLossError(absl::StrFormat("%s: cannot be taken: %s", path,
                                               std::strerror(error)));
  }
  struct stat opened{};
  struct stat renamed{};
  if (::fstat(fd, &opened) != 0 || ::stat(taking.c_str(), &renamed) != 0 ||
      opened.st_ino != renamed.st_ino || opened.st_dev != renamed.st_dev) {
    // Replaced between the open and the rename: put it back, let the caller
    // retry.
    ::rename(taking.c_str(), path.c_str());
    ::close(fd);
    return absl::UnavailableError(absl::StrFormat(
        "%s: replaced while being taken; retry", path));
  }
  const std::string bytes = ReadAll(fd);
  absl::StatusOr<SpilledSession> session = Parse(path, bytes);
  if (session.ok() && session->session_id != session_id) {
    session = absl::DataLossError(
        absl::StrFormat("%s: holds another session", path));
  }
  if (!session.ok()) {
    // Never lose a file: a bad one goes back under its name for the
    // operator (and fails the same way next time).
    ::rename(taking.c_str(), path.c_str());
    ::close(fd);
    return session.status();
  }
  ::unlink(taking.c_str());
  ::close(fd);
  FsyncDirectory(directory_);
  return session;
}

absl::StatusOr<SpilledSession> SessionDisk::Read(
    const std::string& session_id) const {
  const std::string path = PathOf(session_id);
  // A file is only ever replaced by a rename, so what this descriptor
  // reads is one complete version of it.
  TVQ_ASSIGN_OR_RETURN(const int fd, OpenSessionFile(path));
  const std::string bytes = ReadAll(fd);
  ::close(fd);
  absl::StatusOr<SpilledSession> session = Parse(path, bytes);
  if (session.ok() && session->session_id != session_id) {
    return absl::DataLossError(
        absl::StrFormat("%s: holds another session", path));
  }
  return session;
}

bool SessionDisk::Exists(const std::string& session_id) const {
  return ::access(PathOf(session_id).c_str(), F_OK) == 0;
}

void SessionDisk::Remove(const std::string& session_id,
                         std::optional<absl::Time> only_if_last_used) {
  const std::string path = PathOf(session_id);
  if (only_if_last_used.has_value()) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) return;
    std::string header(kFixedV1, '\0');
    const ssize_t n = ::pread(fd, header.data(), kFixedV1, 0);
    ::close(fd);
    if (n != static_cast<ssize_t>(kFixedV1) ||
        static_cast<int64_t>(Get(header, 24, 8)) !=
            absl::ToUnixMillis(*only_if_last_used)) {
      return;
    }
  }
  ::unlink(path.c_str());
}

SessionDisk::ScanResult SessionDisk::Scan() const {
  ScanResult result;
  std::error_code error;
  // First the temporary files. One a write or a take in progress holds
  // locked belongs to another server sharing the directory. Unlocked, it was
  // interrupted: a write before its rename never completed (removed); a take
  // before its unlink holds a complete session that never reached a
  // server's memory (a SIGKILL mid-take), so it goes back under its name
  // unless a newer file took that name meanwhile.
  std::vector<std::string> temporaries;
  for (const std::filesystem::directory_entry& entry :
       std::filesystem::directory_iterator(directory_, error)) {
    if (absl::StrContains(entry.path().filename().string(), kTemporary)) {
      temporaries.push_back(entry.path().string());
    }
  }
  for (const std::string& path : temporaries) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) continue;
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);
      continue;
    }
    const size_t taking = path.rfind(kTaking);
    const std::string name =
        taking == std::string::npos ? "" : path.substr(0, taking);
    if (!name.empty() && ::access(name.c_str(), F_OK) != 0) {
      if (::rename(path.c_str(), name.c_str()) == 0) {
        result.problems.push_back(absl::StrFormat(
            "%s: restored as %s (a take interrupted before the session "
            "reached a server's memory)",
            path, name));
      } else {
        // Never lose it: left for the operator.
        result.problems.push_back(absl::StrFormat(
            "%s: an interrupted take that cannot be restored as %s (%s); "
            "left in place",
            path, name, std::strerror(errno)));
      }
    } else {
      ::unlink(path.c_str());
      result.problems.push_back(
          name.empty()
              ? absl::StrFormat(
                    "%s: removed (a write interrupted before its rename)",
                    path)
              : absl::StrFormat("%s: removed (an interrupted take; %s holds "
                                "a newer file)",
                                path, name));
    }
    ::close(fd);
  }
  if (!temporaries.empty()) FsyncDirectory(directory_);
  for (const std::filesystem::directory_entry& entry :
       std::filesystem::directory_iterator(directory_, error)) {
    const std::string path = entry.path().string();
    const std::string name = entry.path().filename().string();
    if (absl::StrContains(name, kTemporary)) continue;
    if (!absl::EndsWith(name, kSuffix) || !entry.is_regular_file(error)) {
      continue;
    }
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) {
      // Taken by a server sharing the directory since the listing: its
      // business, not a problem.
      if (errno != ENOENT) {
        result.problems.push_back(absl::StrFormat(
            "skipped: %s cannot be opened: %s", path, std::strerror(errno)));
      }
      continue;
    }
    const std::string bytes = ReadAll(fd);
    ::close(fd);
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
