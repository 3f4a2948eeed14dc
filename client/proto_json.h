// JSON renderings of tvq.v1 messages for --json output.
#ifndef TVQ_CLIENT_PROTO_JSON_H_
#define TVQ_CLIENT_PROTO_JSON_H_

#include <string>

#include "google/protobuf/message.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "nlohmann/json.hpp"
#include "tvq/v1/tvq.pb.h"

namespace tvq::client {

// Every field of `message` under its proto name: scalars (64-bit integers
// as JSON numbers), enums by value name, messages as objects, repeated
// fields as arrays; optional fields that are unset (and unset messages) are
// null.
nlohmann::ordered_json MessageToJson(const google::protobuf::Message& message);

// {"id": int, "logprob": float, "top": [{"id": int, "logprob": float}, ...]}
nlohmann::ordered_json TokenLogprobToJson(const v1::TokenLogprob& logprob);
nlohmann::ordered_json TokenLogprobsToJson(
    const google::protobuf::RepeatedPtrField<v1::TokenLogprob>& logprobs);

// "length", "stop_sequence", "eos", "stop_token", "cancelled" or
// "unspecified".
std::string FinishReasonName(v1::FinishReason reason);

// A JSON document as printed on stdout (two-space indent, UTF-8 kept;
// invalid UTF-8 replaced).
std::string DumpJson(const nlohmann::ordered_json& value);

}  // namespace tvq::client

#endif  // TVQ_CLIENT_PROTO_JSON_H_
