// The Event bytes of a captured tensor and the NaN/Inf check (declared in capture_event.h).
#include "capture_event.h"

#include <cstring>

#include "tensorflow/core/framework/tensor.pb.h"
#include "tensorflow/core/framework/types.h"

namespace tfbb {
namespace {

void put_varint(std::string* out, uint64_t v) {
  while (v >= 0x80) { out->push_back(static_cast<char>(v | 0x80)); v >>= 7; }
  out->push_back(static_cast<char>(v));
}

void put_bytes(std::string* out, int field, const std::string& s) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | 2);
  put_varint(out, s.size());
  out->append(s);
}

// The JSON that protobuf's MessageToJsonString prints for DebuggerEventMetadata with
// always_print_primitive_fields (device, outputSlot, numChunks, chunkIndex).
std::string metadata_json(const std::string& device, int32_t slot) {
  std::string out = "{\"device\":\"";
  for (char c : device) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out += "\",\"outputSlot\":" + std::to_string(slot) + ",\"numChunks\":1,\"chunkIndex\":0}";
  return out;
}



size_t varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) { v >>= 7; ++n; }
  return n;
}

// The Event around a Value: wall_time (1), summary (5) { value (1) { ... } }.
void put_event_head(std::string* out, uint64_t wall_time_us, size_t value_len) {
  const size_t summary_len = 1 + varint_size(value_len) + value_len;
  double wall = static_cast<double>(wall_time_us);
  put_varint(out, (1 << 3) | 1);                                      // Event.wall_time
  char raw[8];
  std::memcpy(raw, &wall, 8);
  out->append(raw, 8);
  put_varint(out, (5 << 3) | 2);                                      // Event.summary
  put_varint(out, summary_len);
  put_varint(out, (1 << 3) | 2);                                      // Summary.value
  put_varint(out, value_len);
}

}  // namespace

Captured capture(const tensorflow::DebugNodeKey& key, const tensorflow::Tensor& tensor,
                 uint64_t wall_time_us) {
  Captured out;
  std::string plugin, meta;
  put_bytes(&plugin, 1, "debugger");                                  // PluginData.plugin_name
  put_bytes(&plugin, 2, metadata_json(key.device_name, key.output_slot));   // .content
  put_bytes(&meta, 1, plugin);                                        // SummaryMetadata.plugin_data
  put_bytes(&out.tail, 9, meta);                                      // Value.metadata
  out.dtype = tensor.dtype();
  for (int i = 0; i < tensor.dims(); ++i) out.dims.push_back(tensor.dim_size(i));
  // The tensor as WrapTensorAsEvents puts it: dtype, shape and tensor_content, or string_val
  // for strings; nothing else of AsProtoTensorContent's output. Fields serialize in number
  // order, so tensor_content (4) comes last.
  tensorflow::TensorProto proto;
  std::string tensor_head;
  std::string tensor_bytes;   // the slow path's whole TensorProto
  const bool plain = tensor.dtype() != tensorflow::DT_STRING &&
                     tensorflow::DataTypeCanUseMemcpy(tensor.dtype());
  if (plain) {
    proto.set_dtype(tensor.dtype());
    tensor.shape().AsProto(proto.mutable_tensor_shape());
    proto.SerializeToString(&tensor_head);
    auto data = tensor.tensor_data();
    out.content = data.data();
    out.content_len = data.size();
    if (out.content_len) {
      put_varint(&tensor_head, (4 << 3) | 2);                         // tensor_content
      put_varint(&tensor_head, out.content_len);
    }
  } else {
    tensorflow::TensorProto full;
    if (tensor.dtype() == tensorflow::DT_STRING) {
      tensor.AsProtoField(&full);
      proto.set_dtype(full.dtype());
      *proto.mutable_tensor_shape() = full.tensor_shape();
      proto.mutable_string_val()->Swap(full.mutable_string_val());
    } else {
      tensor.AsProtoTensorContent(&full);
      proto.set_dtype(full.dtype());
      *proto.mutable_tensor_shape() = full.tensor_shape();
      proto.mutable_tensor_content()->swap(*full.mutable_tensor_content());
    }
    proto.SerializeToString(&tensor_bytes);
  }
  std::string value_head;
  put_bytes(&value_head, 1, key.node_name);                           // Value.tag
  put_bytes(&value_head, 7, key.debug_node_name);                     // Value.node_name
  if (plain) {
    put_varint(&value_head, (8 << 3) | 2);                            // Value.tensor
    put_varint(&value_head, tensor_head.size() + out.content_len);
    value_head += tensor_head;
    put_event_head(&out.head, wall_time_us,
                   value_head.size() + out.content_len + out.tail.size());
    out.content_at = out.content_len ? out.head.size() + value_head.size() : 0;
    out.head += value_head;
    return out;
  }
  // slow path: the whole Event in head; its content's place is still reported
  const size_t clen = proto.tensor_content().size();
  const size_t in_value = value_head.size() + 1 + varint_size(tensor_bytes.size()) +
                          tensor_bytes.size() - clen;
  put_bytes(&value_head, 8, tensor_bytes);                            // Value.tensor
  put_event_head(&out.head, wall_time_us, value_head.size() + out.tail.size());
  out.content_at = clen ? out.head.size() + in_value : 0;
  out.content_len = clen;
  out.head += value_head;
  out.head += out.tail;
  out.tail.clear();
  out.content = nullptr;
  return out;
}


bool has_nonfinite(const tensorflow::Tensor& t) {
  switch (t.dtype()) {   // tensor_data() only for these: it aborts on strings and resources
    case tensorflow::DT_FLOAT: case tensorflow::DT_COMPLEX64: case tensorflow::DT_DOUBLE:
    case tensorflow::DT_COMPLEX128: case tensorflow::DT_HALF: case tensorflow::DT_BFLOAT16:
      break;
    default:
      return false;
  }
  const void* data = t.tensor_data().data();
  const size_t bytes = t.tensor_data().size();
  switch (t.dtype()) {
    case tensorflow::DT_FLOAT:
    case tensorflow::DT_COMPLEX64:
      return exponent_all_ones<uint32_t>(data, bytes / 4, 0x7f800000u);
    case tensorflow::DT_DOUBLE:
    case tensorflow::DT_COMPLEX128:
      return exponent_all_ones<uint64_t>(data, bytes / 8, 0x7ff0000000000000ull);
    case tensorflow::DT_HALF:
      return exponent_all_ones<uint16_t>(data, bytes / 2, 0x7c00u);
    case tensorflow::DT_BFLOAT16:
      return exponent_all_ones<uint16_t>(data, bytes / 2, 0x7f80u);
    default:
      return false;
  }
}

}  // namespace tfbb
