#include "server/auth/tls_certificates.h"

#include <optional>
#include <utility>

namespace tvq::auth {

absl::StatusOr<std::unique_ptr<TlsCertificates>> TlsCertificates::Load(
    TlsPaths paths) {
  absl::StatusOr<std::optional<TlsMaterial>> material = LoadTlsMaterial(paths);
  if (!material.ok()) return material.status();
  if (!material->has_value()) return nullptr;
  return std::unique_ptr<TlsCertificates>(
      new TlsCertificates(std::move(paths), **std::move(material)));
}

TlsCertificates::TlsCertificates(TlsPaths paths, TlsMaterial material)
    : paths_(std::move(paths)),
      mutual_(material.mutual()),
      material_(std::make_shared<const TlsMaterial>(std::move(material))) {}

absl::Status TlsCertificates::Reload() {
  absl::StatusOr<std::optional<TlsMaterial>> material =
      LoadTlsMaterial(paths_);
  if (!material.ok()) return material.status();
  // The same non-empty flags are read, so the material is there and has a
  // client CA exactly when it had one at start.
  auto fresh = std::make_shared<const TlsMaterial>(**std::move(material));
  absl::MutexLock lock(&mutex_);
  material_ = std::move(fresh);
  ++generation_;
  return absl::OkStatus();
}

TlsCertificates::Snapshot TlsCertificates::Current() const {
  absl::MutexLock lock(&mutex_);
  return Snapshot{material_, generation_};
}

}  // namespace tvq::auth
