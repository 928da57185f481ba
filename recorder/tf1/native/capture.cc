// In-memory capture of tfdbg debug-op output (DebugIdentity, DebugNumericSummary, ...).
//
// TF's debug ops publish every watched tensor to their debug URLs; for a `memcbk://KEY` URL
// they call the callback registered under KEY in DebugCallbackRegistry. This library registers
// such callbacks and turns each tensor into the very Event bytes tfdbg's file:// path would
// write (see WrapTensorAsEvents in tensorflow/core/debug/debug_io_utils.cc), appended to a
// per-key buffer that Python takes after each session.run. No file per tensor, no syscall.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "tensorflow/core/debug/debug_callback_registry.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor.pb.h"
#include "tensorflow/core/framework/types.h"
#include "tensorflow/core/platform/env.h"

namespace {

// What a watch's records share run after run while its tensor keeps its dtype and shape:
// everything but the wall time and the content (built once by capture(), then copied).
struct Prebuilt {
  std::string device, node, op;
  int32_t slot = 0, dtype = 0;
  std::vector<int64_t> dims;
  uint32_t total = 0, content_len = 0;
  std::string middle;   // the record after its wall time, up to the Event
  std::string head;     // the Event up to the content; bytes 1..8 are the wall time
  std::string tail;
};

// Black-box mode: a tensor whose content the sink keeps by reference instead of copying it.
// The tensor is the output of the Copy node tfdbg puts before every debug op (a deep copy that
// nothing else consumes), so nobody writes into its buffer while it is held. `at` is where its
// content belongs in the sink's records.
struct Held {
  size_t at;
  tensorflow::Tensor tensor;
};

// The sink's lock. TF's compute threads publish tensors at once and hold it for well under a
// microsecond (a record's header, or its content's copy); a std::mutex made them sleep and
// wake through futex calls, 12% of their time at 2 509 tensors (perf), so waiters spin,
// yielding the core after a while (the holder may be descheduled on a busy machine).
class SpinLock {
 public:
  void lock() {
    for (int n = 0; locked_.exchange(true, std::memory_order_acquire); ++n) {
      while (locked_.load(std::memory_order_relaxed)) {
        if (++n > 100) {
          std::this_thread::yield();
        } else {
#if defined(__x86_64__) || defined(__i386__)
          __builtin_ia32_pause();
#endif
        }
      }
    }
  }
  void unlock() { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

struct Sink {
  SpinLock mu;
  std::string data;   // records, see append_record
  // Black-box mode (tfbb_hold): the content of plain tensors stays in TF's buffers, held here
  // until the ring drops the step (nothing copied) or a trigger writes it (tfbb_fill copies).
  std::atomic<bool> hold{false};   // also: check for NaN/Inf (only the ring's trigger asks)
  std::vector<Held> held;
  int64_t held_bytes = 0;
  // Buffers handed back by tfbb_release, reused by the next takes: a ring holding K steps
  // of a large graph would otherwise map (and fault in) a fresh buffer every run.
  std::vector<std::string> spare;
  std::unordered_map<std::string, Prebuilt> prebuilt;   // by the debug node's name
  bool open = true;
  int64_t failed = 0;  // tensors not captured (out of memory): counted, never thrown into TF
  // tests: make the next N captures fail as an allocation would (atomic: read by every
  // capture, so not one more acquisition of mu, which TF's threads contend for)
  std::atomic<int64_t> fail_next{0};
  int64_t nonfinite = 0;  // DebugIdentity float tensors holding NaN or +-Inf (black-box mode)
};

// Whether a float tensor holds NaN or +-Inf: all exponent bits set. Branch-free over the
// whole buffer (the compiler vectorises it), on TF's thread while the data is in cache.
// (b & mask) <= mask always, so the largest masked value is mask exactly when some element
// is NaN or Inf: a max reduction, which the compiler vectorises (the compare-and-or form it
// did one element at a time: 86% of the capture's CPU at 2 509 tensors, by perf).
template <typename Bits>
__attribute__((optimize("O3"))) bool exponent_all_ones(const void* data, size_t n, Bits mask) {
  const Bits* b = static_cast<const Bits*>(data);
  Bits top = 0;
  for (size_t i = 0; i < n; ++i) {
    const Bits e = b[i] & mask;
    top = e > top ? e : top;
  }
  return top == mask;
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

std::mutex g_mu;
// Never destroyed: TF may call a callback while the process exits.
auto* g_sinks = new std::map<std::string, std::shared_ptr<Sink>>();
auto* g_discard_counts = new std::map<std::string, std::atomic<int64_t>*>();

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

// One captured tensor's Event in three parts: head + content + tail. The content (the
// tensor_content payload) points into the tensor's own buffer when its dtype is plain memory,
// so it is copied once, into the sink; otherwise the whole Event is in head.
struct Captured {
  std::string head, tail;
  const char* content = nullptr;
  uint32_t content_len = 0;   // tensor_content's payload (0: none, e.g. strings)
  uint32_t content_at = 0;    // where it starts in the Event
  int32_t dtype = 0;
  std::vector<int64_t> dims;
  size_t event_size() const { return head.size() + (content ? content_len : 0) + tail.size(); }
};

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

template <typename T>
void put_raw(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// One record (little-endian): u32 length of the rest, u64 wall time (us), i32 output slot,
// i32 dtype enum, u32 rank, u32 lengths of the device name, node name, debug op and Event,
// u32 offset and length of the tensor_content payload in the Event; then rank i64 dims and
// those four strings. dtype and dims are the Event's TensorProto's. Written straight into the
// sink: the tensor's content is copied once.
// The content of a plain tensor: copied into the sink, or held by reference (black-box mode).
void append_content(Sink* sink, const tensorflow::Tensor* tensor, const char* data, size_t n) {
  if (sink->hold && tensor != nullptr) {
    sink->held.push_back(Held{sink->data.size(), *tensor});
    sink->held_bytes += static_cast<int64_t>(n);
  } else {
    sink->data.append(data, n);
  }
}

void append_record(Sink* sink, const tensorflow::DebugNodeKey& key, uint64_t wall_time_us,
                   const Captured& captured, bool plain, const tensorflow::Tensor* tensor,
                   bool nonfinite) {
  std::string rec;
  rec.reserve(44 + 8 * captured.dims.size() + key.device_name.size() + key.node_name.size() +
              key.debug_op.size() + captured.head.size());
  const size_t event_size = captured.event_size();
  const size_t total = 44 + 8 * captured.dims.size() + key.device_name.size() +
                       key.node_name.size() + key.debug_op.size() + event_size;
  put_raw<uint32_t>(&rec, total);
  put_raw<uint64_t>(&rec, wall_time_us);
  put_raw<int32_t>(&rec, key.output_slot);
  put_raw<int32_t>(&rec, captured.dtype);
  put_raw<uint32_t>(&rec, captured.dims.size());
  put_raw<uint32_t>(&rec, key.device_name.size());
  put_raw<uint32_t>(&rec, key.node_name.size());
  put_raw<uint32_t>(&rec, key.debug_op.size());
  put_raw<uint32_t>(&rec, event_size);
  put_raw<uint32_t>(&rec, captured.content_at);
  put_raw<uint32_t>(&rec, captured.content_len);
  for (int64_t d : captured.dims) put_raw<int64_t>(&rec, d);
  rec += key.device_name;
  rec += key.node_name;
  rec += key.debug_op;
  const size_t head_at = rec.size();
  rec += captured.head;
  std::lock_guard<SpinLock> lock(sink->mu);
  if (!sink->open) return;
  if (nonfinite) ++sink->nonfinite;
  sink->data += rec;
  if (captured.content && captured.content_len)
    append_content(sink, plain ? tensor : nullptr, captured.content, captured.content_len);
  sink->data += captured.tail;
  if (!plain || sink->prebuilt.size() > 1000000) return;   // bounded by the graphs' watches
  Prebuilt& p = sink->prebuilt[key.debug_node_name];
  p.device = key.device_name;
  p.node = key.node_name;
  p.op = key.debug_op;
  p.slot = key.output_slot;
  p.dtype = captured.dtype;
  p.dims = captured.dims;
  p.total = static_cast<uint32_t>(total);
  p.content_len = captured.content ? captured.content_len : 0;
  p.middle.assign(rec, 12, head_at - 12);   // after u32 length and u64 wall time
  p.head.assign(rec, head_at, std::string::npos);
  p.tail = captured.tail;
}

// The record of a watch whose Prebuilt still fits its tensor (dtype, shape, names); false when
// it must be built anew. Called with sink->mu held.
bool append_prebuilt(Sink* sink, const tensorflow::DebugNodeKey& key, uint64_t wall_time_us,
                     const tensorflow::Tensor& tensor) {
  auto it = sink->prebuilt.find(key.debug_node_name);
  if (it == sink->prebuilt.end()) return false;
  const Prebuilt& p = it->second;
  if (p.dtype != tensor.dtype() || p.slot != key.output_slot ||
      static_cast<int>(p.dims.size()) != tensor.dims())
    return false;
  for (int i = 0; i < tensor.dims(); ++i)
    if (p.dims[i] != tensor.dim_size(i)) return false;
  auto content = tensor.tensor_data();
  if (content.size() != p.content_len || p.node != key.node_name || p.op != key.debug_op ||
      p.device != key.device_name)
    return false;
  std::string& out = sink->data;
  put_raw<uint32_t>(&out, p.total);
  put_raw<uint64_t>(&out, wall_time_us);
  out += p.middle;
  const size_t wall_at = out.size() + 1;
  out += p.head;
  const double wall = static_cast<double>(wall_time_us);
  std::memcpy(&out[wall_at], &wall, 8);
  if (p.content_len) append_content(sink, &tensor, content.data(), p.content_len);
  out += p.tail;
  return true;
}

// A take()'s buffer, given back to its sink's spares by tfbb_release.
struct Taken {
  std::string data;
  std::vector<Held> held;   // black-box mode: contents still to be put in (tfbb_fill)
  int64_t held_bytes = 0;
  std::weak_ptr<Sink> sink;
};
constexpr size_t kSpareBuffers = 8;   // the ring's K+1 steps (K=5) and two in flight

std::shared_ptr<Sink> find(const char* key) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_sinks->find(key);
  return it == g_sinks->end() ? nullptr : it->second;
}

// A counter of KEY's sink, reset as it is read.
int64_t take_count(const char* key, int64_t Sink::*counter) {
  std::shared_ptr<Sink> sink = find(key);
  if (!sink) return 0;
  std::lock_guard<SpinLock> lock(sink->mu);
  int64_t n = (*sink).*counter;
  (*sink).*counter = 0;
  return n;
}

}  // namespace

extern "C" {

// Registers memcbk://KEY (once per key; a key is never unregistered, since a cached executor
// may still publish to it and TF aborts the process on a memcbk key without a callback).
int tfbb_register(const char* key) {
  std::string k(key);
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_sinks->find(k);
    if (it != g_sinks->end()) {
      std::lock_guard<SpinLock> l2(it->second->mu);
      it->second->open = true;
      return 0;
    }
    (*g_sinks)[k] = std::make_shared<Sink>();
  }
  std::shared_ptr<Sink> sink = find(key);
  tensorflow::DebugCallbackRegistry::singleton()->RegisterCallback(
      k, [sink](const tensorflow::DebugNodeKey& node_key, const tensorflow::Tensor& tensor) {
        try {
          int64_t fail = sink->fail_next.load(std::memory_order_relaxed);
          while (fail > 0 && !sink->fail_next.compare_exchange_weak(fail, fail - 1)) {
          }
          if (fail > 0) throw std::bad_alloc();
          uint64_t now = tensorflow::Env::Default()->NowMicros();
          const bool plain = tensor.IsInitialized() &&
                             tensor.dtype() != tensorflow::DT_STRING &&
                             tensorflow::DataTypeCanUseMemcpy(tensor.dtype());
          // checked before the lock, which is then taken once a tensor: TF's threads publish
          // at once and each extra acquisition showed as futex wake-ups in perf
          const bool bad = sink->hold.load(std::memory_order_relaxed) &&
                           node_key.debug_op == "DebugIdentity" && tensor.IsInitialized() &&
                           has_nonfinite(tensor);
          bool done = false;
          if (plain) {
            std::lock_guard<SpinLock> lock(sink->mu);
            if (!sink->open) return;
            done = append_prebuilt(sink.get(), node_key, now, tensor);
            if (done && bad) ++sink->nonfinite;
          }
          if (!done)
            append_record(sink.get(), node_key, now, capture(node_key, tensor, now), plain,
                          &tensor, bad);
        } catch (...) {   // an exception here would terminate the training process
          // the recorder's own nodes (OWN_SCOPE, dump_capture.py) are never recorded, so
          // losing one loses nothing and is not counted
          if (node_key.node_name.rfind("tfblackbox/", 0) == 0) return;
          std::lock_guard<SpinLock> lock(sink->mu);
          ++sink->failed;
        }
      });
  return 1;
}

// Hands KEY's records over without copying: *data points into a buffer that stays valid until
// tfbb_release(*handle). Returns their size (0: none, *handle is null; -1: unknown key).
int64_t tfbb_take(const char* key, const char** data, void** handle) {
  *data = nullptr;
  *handle = nullptr;
  std::shared_ptr<Sink> sink = find(key);
  if (!sink) return -1;
  auto* taken = new Taken();
  {
    std::lock_guard<SpinLock> lock(sink->mu);
    if (sink->data.empty()) {
      delete taken;
      return 0;
    }
    taken->data.swap(sink->data);
    taken->held.swap(sink->held);
    taken->held_bytes = sink->held_bytes;
    sink->held_bytes = 0;
    taken->sink = sink;
    if (!sink->spare.empty()) {   // a released buffer: its memory is mapped already
      sink->data.swap(sink->spare.back());
      sink->spare.pop_back();
    }
    sink->data.reserve(taken->data.size());   // the next run is likely as large: no regrowing
  }
  *data = taken->data.data();
  *handle = taken;
  return static_cast<int64_t>(taken->data.size());
}

// Bytes of content a take holds in TF's tensors (black-box mode), beside its records' size.
int64_t tfbb_held_bytes(void* handle) { return static_cast<Taken*>(handle)->held_bytes; }

// Puts the held contents into a take's records (so they are whole, as without tfbb_hold) and
// lets the tensors go. Returns the records' new size and sets *data (-1: out of memory; the
// take is unchanged).
int64_t tfbb_fill(void* handle, const char** data) {
  auto* taken = static_cast<Taken*>(handle);
  if (!taken->held.empty()) {
    try {
      std::string whole;
      whole.reserve(taken->data.size() + static_cast<size_t>(taken->held_bytes));
      size_t from = 0;
      for (const Held& h : taken->held) {
        whole.append(taken->data, from, h.at - from);
        auto content = h.tensor.tensor_data();
        whole.append(content.data(), content.size());
        from = h.at;
      }
      whole.append(taken->data, from, std::string::npos);
      taken->data.swap(whole);
    } catch (...) {
      return -1;
    }
    std::vector<Held>().swap(taken->held);
    taken->held_bytes = 0;
  }
  *data = taken->data.data();
  return static_cast<int64_t>(taken->data.size());
}

// Black-box mode for KEY (on != 0): plain tensors' content is held, not copied (tfbb_fill).
void tfbb_hold(const char* key, int on) {
  std::shared_ptr<Sink> sink = find(key);
  if (!sink) return;
  std::lock_guard<SpinLock> lock(sink->mu);
  sink->hold.store(on != 0);
}

// Gives a take's buffer back: kept for a later take (a few of them), else freed.
void tfbb_release(void* handle) {
  auto* taken = static_cast<Taken*>(handle);
  if (std::shared_ptr<Sink> sink = taken->sink.lock()) {
    std::lock_guard<SpinLock> lock(sink->mu);
    if (sink->open && sink->spare.size() < kSpareBuffers) {
      taken->data.clear();
      sink->spare.push_back(std::move(taken->data));
    }
  }
  delete taken;
}

// Stops keeping KEY's records (they are dropped) until it is registered again.
void tfbb_close(const char* key) {
  std::shared_ptr<Sink> sink = find(key);
  if (!sink) return;
  std::lock_guard<SpinLock> lock(sink->mu);
  sink->open = false;
  std::string().swap(sink->data);
  std::vector<Held>().swap(sink->held);
  sink->held_bytes = 0;
  sink->spare.clear();
  sink->prebuilt.clear();
}

// Tensors of KEY that could not be captured since the last call.
int64_t tfbb_take_failed(const char* key) { return take_count(key, &Sink::failed); }

// DebugIdentity float tensors of KEY with NaN or +-Inf since the last call.
int64_t tfbb_take_nonfinite(const char* key) { return take_count(key, &Sink::nonfinite); }

// Tests: the next N tensors of KEY fail to be captured, through the out-of-memory path.
void tfbb_test_fail_next(const char* key, int64_t n) {
  std::shared_ptr<Sink> sink = find(key);
  if (!sink) return;
  sink->fail_next.store(n);
}

// The floor of the capture's cost (tools/bench_blackbox): memcbk://KEY whose callback keeps
// nothing, only counts the tensors TF's debug ops hand it (so a benchmark can check that every
// watched tensor reached it). Whatever a run costs with it is TF's debug ops and copies.
int tfbb_register_discard(const char* key) {
  std::string k(key);
  std::atomic<int64_t>* n;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_discard_counts->count(k)) return 0;
    n = (*g_discard_counts)[k] = new std::atomic<int64_t>(0);
  }
  tensorflow::DebugCallbackRegistry::singleton()->RegisterCallback(
      k, [n](const tensorflow::DebugNodeKey&, const tensorflow::Tensor&) {
        n->fetch_add(1, std::memory_order_relaxed);
      });
  return 1;
}

// Tensors handed to the discarding KEY so far (-1: no such key).
int64_t tfbb_discarded(const char* key) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_discard_counts->find(key);
  return it == g_discard_counts->end() ? -1 : it->second->load();
}

int tfbb_abi_version() { return 9; }

}  // extern "C"
