#include "client/proto_json.h"

#include "google/protobuf/descriptor.h"

namespace tvq::client {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

nlohmann::ordered_json SingularFieldToJson(const Message& message,
                                           const FieldDescriptor& field) {
  const Reflection& reflection = *message.GetReflection();
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return reflection.GetInt32(message, &field);
    case FieldDescriptor::CPPTYPE_INT64:
      return reflection.GetInt64(message, &field);
    case FieldDescriptor::CPPTYPE_UINT32:
      return reflection.GetUInt32(message, &field);
    case FieldDescriptor::CPPTYPE_UINT64:
      return reflection.GetUInt64(message, &field);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return reflection.GetDouble(message, &field);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return reflection.GetFloat(message, &field);
    case FieldDescriptor::CPPTYPE_BOOL:
      return reflection.GetBool(message, &field);
    case FieldDescriptor::CPPTYPE_ENUM:
      return reflection.GetEnum(message, &field)->name();
    case FieldDescriptor::CPPTYPE_STRING:
      return reflection.GetString(message, &field);
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return MessageToJson(reflection.GetMessage(message, &field));
  }
  return nullptr;
}

nlohmann::ordered_json RepeatedElementToJson(const Message& message,
                                             const FieldDescriptor& field,
                                             int index) {
  const Reflection& reflection = *message.GetReflection();
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return reflection.GetRepeatedInt32(message, &field, index);
    case FieldDescriptor::CPPTYPE_INT64:
      return reflection.GetRepeatedInt64(message, &field, index);
    case FieldDescriptor::CPPTYPE_UINT32:
      return reflection.GetRepeatedUInt32(message, &field, index);
    case FieldDescriptor::CPPTYPE_UINT64:
      return reflection.GetRepeatedUInt64(message, &field, index);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return reflection.GetRepeatedDouble(message, &field, index);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return reflection.GetRepeatedFloat(message, &field, index);
    case FieldDescriptor::CPPTYPE_BOOL:
      return reflection.GetRepeatedBool(message, &field, index);
    case FieldDescriptor::CPPTYPE_ENUM:
      return reflection.GetRepeatedEnum(message, &field, index)->name();
    case FieldDescriptor::CPPTYPE_STRING:
      return reflection.GetRepeatedString(message, &field, index);
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return MessageToJson(
          reflection.GetRepeatedMessage(message, &field, index));
  }
  return nullptr;
}

}  // namespace

nlohmann::ordered_json MessageToJson(const Message& message) {
  const Reflection& reflection = *message.GetReflection();
  const google::protobuf::Descriptor& descriptor = *message.GetDescriptor();
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (int i = 0; i < descriptor.field_count(); ++i) {
    const FieldDescriptor& field = *descriptor.field(i);
    if (field.is_repeated()) {
      nlohmann::ordered_json items = nlohmann::ordered_json::array();
      const int size = reflection.FieldSize(message, &field);
      for (int index = 0; index < size; ++index) {
        items.push_back(RepeatedElementToJson(message, field, index));
      }
      out[field.name()] = std::move(items);
    } else if (field.has_presence() && !reflection.HasField(message, &field)) {
      out[field.name()] = nullptr;
    } else {
      out[field.name()] = SingularFieldToJson(message, field);
    }
  }
  return out;
}

nlohmann::ordered_json TokenLogprobToJson(const v1::TokenLogprob& logprob) {
  nlohmann::ordered_json top = nlohmann::ordered_json::array();
  for (const v1::TopLogprob& alternative : logprob.top_logprobs()) {
    top.push_back(
        {{"id", alternative.token_id()}, {"logprob", alternative.logprob()}});
  }
  return {{"id", logprob.token_id()},
          {"logprob", logprob.logprob()},
          {"top", std::move(top)}};
}

nlohmann::ordered_json TokenLogprobsToJson(
    const google::protobuf::RepeatedPtrField<v1::TokenLogprob>& logprobs) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const v1::TokenLogprob& logprob : logprobs) {
    out.push_back(TokenLogprobToJson(logprob));
  }
  return out;
}

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_STOP_SEQUENCE:
      return "stop_sequence";
    case v1::FINISH_REASON_EOS:
      return "eos";
    case v1::FINISH_REASON_STOP_TOKEN:
      return "stop_token";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

std::string DumpJson(const nlohmann::ordered_json& value) {
  return value.dump(2, ' ', /*ensure_ascii=*/false,
                    nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace tvq::client
