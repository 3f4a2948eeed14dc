// The TLS files of tvq-server's listeners, held so that SIGHUP can replace
// them while the server runs (docs/security.md, "Certificate rotation").
// Reload() re-reads --tls-cert, --tls-key and --tls-client-ca through
// LoadTlsMaterial (the same checks as at start); on any error the material
// in force stays. Each front end asks Current() at every new handshake and
// rebuilds its own TLS setup when the generation changed, so connections
// made after a reload present the new certificate and open ones keep the
// one they were made with.
#ifndef TVQ_SERVER_AUTH_TLS_CERTIFICATES_H_
#define TVQ_SERVER_AUTH_TLS_CERTIFICATES_H_

#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/auth/tls_files.h"

namespace tvq::auth {

class TlsCertificates {
 public:
  // nullptr when no TLS flag is set; the checked files when cert and key
  // are; an error naming the flag otherwise (LoadTlsMaterial).
  static absl::StatusOr<std::unique_ptr<TlsCertificates>> Load(
      TlsPaths paths);
  TlsCertificates(const TlsCertificates&) = delete;
  TlsCertificates& operator=(const TlsCertificates&) = delete;

  // Re-reads the files. On success the new material replaces the old one
  // (the generation goes up); on error the old one stays in force. Whether
  // client certificates are required cannot change: the same flags are
  // read.
  absl::Status Reload();

  struct Snapshot {
    std::shared_ptr<const TlsMaterial> material;
    // 0 for the material read at start, +1 per successful Reload.
    uint64_t generation = 0;
  };
  Snapshot Current() const;

  // Client certificates required (--tls-client-ca).
  bool mutual() const { return mutual_; }
  const TlsPaths& paths() const { return paths_; }

 private:
  TlsCertificates(TlsPaths paths, TlsMaterial material);

  const TlsPaths paths_;
  const bool mutual_;
  mutable absl::Mutex mutex_;
  std::shared_ptr<const TlsMaterial> material_ ABSL_GUARDED_BY(mutex_);
  uint64_t generation_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace tvq::auth

#endif  // TVQ_SERVER_AUTH_TLS_CERTIFICATES_H_
