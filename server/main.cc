// tvq-server: placeholder until the gRPC issue lands; loads the model and
// reports it.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "server/runtime/model_weights.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "gRPC listen address HOST:PORT");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9464", "Prometheus metrics listen address HOST:PORT");
ABSL_FLAG(std::string, device, "auto", "auto, cpu, cuda or cuda:N");
ABSL_FLAG(int, threads, 0, "CPU threads (0 = all cores)");
ABSL_FLAG(std::string, model, "models/default", "Model directory (config.json + model.safetensors)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Transformer-VQ inference server. Usage: tvq-server --model=DIR");
  absl::ParseCommandLine(argc, argv);
  auto weights = tvq::runtime::ModelWeights::Load(absl::GetFlag(FLAGS_model));
  if (!weights.ok()) {
    std::fprintf(stderr, "tvq-server: %s\n", weights.status().ToString().c_str());
    return 1;
  }
  std::printf("tvq-server: loaded %s\n", absl::GetFlag(FLAGS_model).c_str());
  return 0;
}
