// tvq-server with --weights-dtype=bf16 --state-dtype=bf16 (issue 16), the
// real binary over loopback: GetModelInfo reports both dtypes and the halved
// state, greedy generation runs and matches a float32 server's tokens on the
// golden prompt, and bad values stop the server naming the flag.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/server_process.h"
#include "tests/support/test_util.h"

namespace tvq::testing {
namespace {

v1::GetModelInfoResponse Info(ServerProcess& server) {
  v1::GetModelInfoResponse info;
  grpc::ClientContext context;
  EXPECT_TRUE(server.stub().GetModelInfo(&context, {}, &info).ok());
  return info;
}

std::vector<int32_t> Greedy(ServerProcess& server,
                            const std::vector<int32_t>& prompt, int count) {
  v1::GenerateRequest request;
  request.mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
  request.set_no_eos_prefix(true);
  request.set_max_new_tokens(count);
  request.set_temperature(0);
  request.set_ignore_eos(true);
  v1::GenerateResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  const grpc::Status status = server.stub().Generate(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return {response.token_ids().begin(), response.token_ids().end()};
}

TEST(Bf16Server, ReportsDtypesAndHalvedStateAndGeneratesLikeFloat32) {
  const GoldenCase golden = LoadGolden("tiny-byte");
  auto bf16 = ServerProcess::Start(GoldenModel("tiny-byte"),
                                   {"--num-slots=2", "--weights-dtype=bf16",
                                    "--state-dtype=bf16"});
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  auto f32 = ServerProcess::Start(GoldenModel("tiny-byte"), {"--num-slots=2"});
  ASSERT_TRUE(f32.ok()) << f32.status();

  const v1::GetModelInfoResponse bf16_info = Info(**bf16);
  EXPECT_EQ(bf16_info.served_weights_dtype(), "BF16");
  EXPECT_EQ(bf16_info.state_dtype(), "BF16");
  EXPECT_EQ(bf16_info.weights_dtype(), "F32");  // the file's storage
  // 8 + 4 sublayers * 1 head * (4*32 + 2*32*128 + 4*8 + 2*8*128)
  EXPECT_EQ(bf16_info.state_bytes_per_sequence(), 8 + 4 * (128 + 8192 + 32 + 2048));
  const v1::GetModelInfoResponse f32_info = Info(**f32);
  EXPECT_EQ(f32_info.served_weights_dtype(), "F32");
  EXPECT_EQ(f32_info.state_dtype(), "F32");
  EXPECT_EQ(f32_info.state_bytes_per_sequence(), 8 + 4 * (128 + 16384 + 32 + 4096));

  // The golden prompt: tiny-byte's top-1/top-2 gaps are >= 1e-3 in float32,
  // but bf16 may flip a near-tie; 16 greedy tokens from a 20-token prompt
  // agree here (bf16_engine_test checks the near-tie rule itself).
  const std::vector<int32_t> prompt(golden.tokens.begin(), golden.tokens.begin() + 20);
  const std::vector<int32_t> from_bf16 = Greedy(**bf16, prompt, 16);
  ASSERT_EQ(from_bf16.size(), 16u);
  EXPECT_EQ(from_bf16, Greedy(**f32, prompt, 16));
}

TEST(Bf16Server, BadDtypeValuesStopTheServerNamingTheFlag) {
  const std::string model = "--model=" + GoldenModel("tiny-byte");
  for (const std::string flag : {"--weights-dtype", "--state-dtype"}) {
    const auto exit = ServerProcess::RunToExit({model, flag + "=fp16"});
    EXPECT_EQ(exit.exit_code, 2) << exit.output;
    EXPECT_NE(exit.output.find(flag), std::string::npos) << exit.output;
    EXPECT_NE(exit.output.find("f32 or bf16"), std::string::npos) << exit.output;
  }
}

}  // namespace
}  // namespace tvq::testing
