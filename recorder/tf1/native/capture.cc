// In-memory capture of tfdbg debug-op output (DebugIdentity, DebugNumericSummary, ...).
//
// TF's debug ops publish every watched tensor to their debug URLs; for a `memcbk://KEY` URL
// they call the callback registered under KEY in DebugCallbackRegistry. This library registers
// such callbacks and turns each tensor into the very Event bytes tfdbg's file:// path would
// write (see WrapTensorAsEvents in tensorflow/core/debug/debug_io_utils.cc), appended to a
// per-key buffer that Python takes after each session.run. No file per tensor, no syscall.
#include <algorithm>
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

#include "capture_arena.h"
#include "capture_event.h"
#include "capture_sink.h"
#include "tensorflow/core/debug/debug_callback_registry.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor.pb.h"
#include "tensorflow/core/framework/types.h"
#include "tensorflow/core/platform/env.h"

namespace {

using tfbb::Captured;
using tfbb::capture;
using tfbb::has_nonfinite;
using tfbb::Held;
using tfbb::Prebuilt;
using tfbb::Sink;
using tfbb::SpinLock;
using tfbb::Chunk;
using tfbb::arena_alloc;
using tfbb::copy_content;

using tfbb::kMaxChunk;
using tfbb::kMinChunk;

constexpr size_t kMaxPrebuilt = 1 << 20;   // prebuilt records a sink keeps: above any graph

std::mutex g_mu;
// Never destroyed: TF may call a callback while the process exits.
auto* g_sinks = new std::map<std::string, std::shared_ptr<Sink>>();
auto* g_discard_counts = new std::map<std::string, std::atomic<int64_t>*>();


template <typename T>
void put_raw(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// One record (little-endian): u32 length of the rest, u64 wall time (us), i32 output slot,
// i32 dtype enum, u32 rank, u32 lengths of the device name, node name, debug op and Event,
// u32 offset and length of the tensor_content payload in the Event; then rank i64 dims and
// those four strings. dtype and dims are the Event's TensorProto's. Written straight into the
// sink: the tensor's content is copied once.
// Where a plain tensor's n bytes of content go in black-box mode: the arena, taken before any
// of its record is appended (an allocation that fails leaves no half record); nullptr when
// they are copied into the records.
char* content_place(Sink* sink, size_t n) {
  return sink->hold && n ? arena_alloc(sink, n) : nullptr;
}

// A content bound for the arena, copied by the callback once the sink's lock is let go (the
// NaN/Inf check made in the same pass): TF's threads publish at once, and the copy held the
// lock for most of its time. sink->copying counts it until done (tfbb_close waits for it).
struct Pending {
  char* dst = nullptr;
  const char* src = nullptr;
  size_t n = 0;
};

// The content of a plain tensor (with sink->mu held): to `place` in the arena, now or as
// `pending` when the caller copies it after the lock, else into the records.
void append_content(Sink* sink, char* place, const char* data, size_t n, Pending* pending) {
  if (place == nullptr) {
    sink->data.append(data, n);
    return;
  }
  if (pending != nullptr) {
    *pending = Pending{place, data, n};   // counted in sink->copying by the caller, last
  } else {
    copy_content(place, data, n, tensorflow::DT_INVALID, false);
  }
  sink->held.push_back(Held{sink->data.size(), place, n});
  sink->held_bytes += static_cast<int64_t>(n);
}

void append_record(Sink* sink, const tensorflow::DebugNodeKey& key, uint64_t wall_time_us,
                   const Captured& captured, bool plain, bool nonfinite) {
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
  const size_t n = captured.content ? captured.content_len : 0;
  char* place = content_place(sink, n);
  if (nonfinite) ++sink->nonfinite;
  sink->data += rec;
  if (n) append_content(sink, place, captured.content, n, nullptr);
  sink->data += captured.tail;
  if (!plain) return;
  // one entry per debug op kernel; executors made again and again leave stale addresses, so
  // the map starts over rather than grow without bound
  if (sink->prebuilt.size() >= kMaxPrebuilt) sink->prebuilt.clear();
  Prebuilt& p = sink->prebuilt[&key];
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
// it must be built anew. Called with sink->mu held. Found by the address of the DebugNodeKey:
// TF's debug op kernel owns it and passes the same object every run, so no hashing of its
// ~100-character name (4% of TF's threads at 2 509 tensors, by perf). A new kernel at a freed
// kernel's address fails the name checks below and is built anew.
bool append_prebuilt(Sink* sink, const tensorflow::DebugNodeKey& key, uint64_t wall_time_us,
                     const tensorflow::Tensor& tensor, Pending* pending) {
  auto it = sink->prebuilt.find(&key);
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
  char* place = content_place(sink, p.content_len);
  if (place != nullptr && sink->held.size() == sink->held.capacity())   // no throw once appending
    sink->held.reserve(2 * sink->held.size() + 64);
  std::string& out = sink->data;
  put_raw<uint32_t>(&out, p.total);
  put_raw<uint64_t>(&out, wall_time_us);
  out += p.middle;
  const size_t wall_at = out.size() + 1;
  out += p.head;
  const double wall = static_cast<double>(wall_time_us);
  std::memcpy(&out[wall_at], &wall, 8);
  if (p.content_len) append_content(sink, place, content.data(), p.content_len, pending);
  out += p.tail;
  if (pending->dst != nullptr) sink->copying.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// A take()'s buffer, given back to its sink's spares by tfbb_release.
struct Taken {
  std::string data;
  std::vector<Held> held;   // black-box mode: contents still to be put in (tfbb_fill)
  int64_t held_bytes = 0;
  std::vector<Chunk> chunks;   // the arena memory they are in
  std::weak_ptr<Sink> sink;
};
constexpr size_t kSpareBuffers = 8;   // what a burst of the ingest's releases hands back

std::shared_ptr<Sink> find(const char* key) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_sinks->find(key);
  return it == g_sinks->end() ? nullptr : it->second;
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
          // the ring's NaN/Inf check (only its trigger asks); the lock is taken once a tensor:
          // TF's threads publish at once and each extra acquisition showed as futex wake-ups
          const bool check = sink->hold.load(std::memory_order_relaxed) &&
                             node_key.debug_op == "DebugIdentity" && tensor.IsInitialized();
          bool done = false;
          if (plain) {
            Pending pending;
            {
              std::lock_guard<SpinLock> lock(sink->mu);
              if (!sink->open) return;
              done = append_prebuilt(sink.get(), node_key, now, tensor, &pending);
            }
            if (pending.dst != nullptr) {
              if (copy_content(pending.dst, pending.src, pending.n, tensor.dtype(), check))
                sink->nonfinite.fetch_add(1, std::memory_order_relaxed);
              sink->copying.fetch_sub(1, std::memory_order_release);
            }
          }
          const bool bad = !done && check && has_nonfinite(tensor);
          if (!done)
            append_record(sink.get(), node_key, now, capture(node_key, tensor, now), plain,
                          bad);
        } catch (...) {   // an exception here would terminate the training process
          // the recorder's own nodes (OWN_SCOPE, executor_graphs.py) are never recorded, so
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
// counts[0]: bytes of arena the take keeps (black-box mode: its contents' chunks), beside its
// records; counts[1]: tensors that could not be captured since the last take; counts[2]:
// DebugIdentity float tensors with NaN or +-Inf since the last take. One call and one
// acquisition of the sink's lock a step.
int64_t tfbb_take(const char* key, const char** data, void** handle, int64_t* counts) {
  *data = nullptr;
  *handle = nullptr;
  counts[0] = counts[1] = counts[2] = 0;
  std::shared_ptr<Sink> sink = find(key);
  if (!sink) return -1;
  auto* taken = new Taken();
  {
    std::lock_guard<SpinLock> lock(sink->mu);
    counts[1] = sink->failed;
    counts[2] = sink->nonfinite.exchange(0);
    sink->failed = 0;
    if (sink->data.empty()) {
      delete taken;
      return 0;
    }
    taken->data.swap(sink->data);
    taken->held.swap(sink->held);
    taken->chunks.swap(sink->arena.chunks);
    sink->arena.used = 0;
    taken->held_bytes = sink->held_bytes;
    sink->held_bytes = 0;
    // the next run is likely as large: chunks of a sixteenth of it (what its last chunk can
    // leave unused), 64 kB to 4 MB
    sink->chunk_size = std::min(kMaxChunk, std::max(kMinChunk, (static_cast<size_t>(
        taken->held_bytes) / 16 + kMinChunk - 1) & ~(kMinChunk - 1)));
    sink->chunks_per_take = std::max(sink->chunks_per_take, taken->chunks.size());
    // the ring counts the memory the take keeps: its chunks whole, not only their contents
    size_t arena = 0;
    for (const Chunk& c : taken->chunks) arena += c.cap;
    counts[0] = static_cast<int64_t>(std::max(arena, static_cast<size_t>(taken->held_bytes)));
    sink->held.reserve(taken->held.size());   // as for data: no regrowing in TF's threads
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

// A take's arena chunks back to its sink's spares, as many as two takes use (the ring drops a
// step as the next comes in); chunks of another size than the sink's are freed.
void give_back_chunks(Taken* taken) {
  if (taken->chunks.empty()) return;
  if (std::shared_ptr<Sink> sink = taken->sink.lock()) {
    std::lock_guard<SpinLock> lock(sink->mu);
    for (Chunk& c : taken->chunks)
      if (sink->open && c.cap == sink->chunk_size &&
          sink->spare_chunks.size() < 2 * sink->chunks_per_take)
        sink->spare_chunks.push_back(std::move(c));
  }
  std::vector<Chunk>().swap(taken->chunks);
}

// Puts the arena's contents into a take's records (so they are whole, as without tfbb_hold)
// and gives its chunks back. Returns the records' new size and sets *data (-1: out of memory; the
// take is unchanged).
int64_t tfbb_fill(void* handle, const char** data) {
  auto* taken = static_cast<Taken*>(handle);
  if (!taken->held.empty()) {
    if (std::shared_ptr<Sink> sink = taken->sink.lock()) {   // tests: as out of memory
      int64_t fail = sink->fail_fills.load();
      while (fail > 0 && !sink->fail_fills.compare_exchange_weak(fail, fail - 1)) {
      }
      if (fail > 0) return -1;
    }
    try {
      std::string whole;
      whole.reserve(taken->data.size() + static_cast<size_t>(taken->held_bytes));
      size_t from = 0;
      for (const Held& h : taken->held) {
        whole.append(taken->data, from, h.at - from);
        whole.append(h.copy, h.len);
        from = h.at;
      }
      whole.append(taken->data, from, std::string::npos);
      taken->data.swap(whole);
    } catch (...) {
      return -1;
    }
    std::vector<Held>().swap(taken->held);
    taken->held_bytes = 0;
    give_back_chunks(taken);
  }
  *data = taken->data.data();
  return static_cast<int64_t>(taken->data.size());
}

// Black-box mode for KEY (on != 0): plain tensors' content goes to the arena (tfbb_fill).
void tfbb_hold(const char* key, int on) {
  std::shared_ptr<Sink> sink = find(key);
  if (!sink) return;
  std::lock_guard<SpinLock> lock(sink->mu);
  sink->hold.store(on != 0);
}

// Gives a take's buffer back: kept for a later take (a few of them), else freed.
void tfbb_release(void* handle) {
  auto* taken = static_cast<Taken*>(handle);
  give_back_chunks(taken);
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
  std::vector<Chunk> chunks, spares;
  {
    std::lock_guard<SpinLock> lock(sink->mu);
    sink->open = false;
    std::string().swap(sink->data);
    std::vector<Held>().swap(sink->held);
    sink->held_bytes = 0;
    sink->spare.clear();
    chunks.swap(sink->arena.chunks);
    sink->arena.used = 0;
    spares.swap(sink->spare_chunks);
    sink->prebuilt.clear();
  }
  // a callback may still be copying into a chunk (a session.run on another thread): the
  // chunks are freed once it is done, and no new copy starts on a closed sink
  while (sink->copying.load(std::memory_order_acquire) > 0) std::this_thread::yield();
}

// Tests: the next N tensors of KEY fail to be captured, through the out-of-memory path.
void tfbb_test_fail_next(const char* key, int64_t n) {
  std::shared_ptr<Sink> sink = find(key);
  if (!sink) return;
  sink->fail_next.store(n);
}

// Tests: the next N tfbb_fill calls of KEY's takes fail as out of memory (the take unchanged).
void tfbb_test_fail_fill(const char* key, int64_t n) {
  std::shared_ptr<Sink> sink = find(key);
  if (!sink) return;
  sink->fail_fills.store(n);
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

int tfbb_abi_version() { return 10; }

}  // extern "C"
