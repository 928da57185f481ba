// The per-key state of the in-memory capture (capture.cc): what TF's threads append to and
// Python takes from after each session.run.
#ifndef TFBLACKBOX_CAPTURE_SINK_H_
#define TFBLACKBOX_CAPTURE_SINK_H_

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace tfbb {

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

// Black-box mode: a tensor's content kept apart from the records, streamed into the sink's
// arena (`len` bytes at `copy`); `at` is where it belongs in the records.
struct Held {
  size_t at;
  const char* copy;
  size_t len;
};

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

// Memory of the ring's contents, in chunks that never move (so a take's Held pointers stay
// valid) and go back to the sink's spares when the ring drops a step: once the ring has
// filled, its copies go to memory it has touched before, with no page faults.
struct Chunk {
  std::unique_ptr<char, FreeDeleter> p;
  size_t cap = 0;
};
struct Arena {
  std::vector<Chunk> chunks;
  size_t used = 0;   // bytes taken of the last chunk
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
  // Black-box mode (tfbb_hold): the content of plain tensors goes to the arena, apart from the
  // records, until the ring drops the step or a trigger writes it (tfbb_fill puts it in).
  std::atomic<bool> hold{false};   // also: check for NaN/Inf (only the ring's trigger asks)
  std::vector<Held> held;
  int64_t held_bytes = 0;
  Arena arena;
  std::vector<Chunk> spare_chunks;   // given back by released takes (tfbb_release)
  size_t chunk_size = 0;        // new chunks' size: a sixteenth of a take's content (tfbb_take)
  size_t chunks_per_take = 0;   // the most a take has had: how many spares are worth keeping
  // Buffers handed back by tfbb_release, reused by the next takes: while the ingest keeps up,
  // a run's records go into memory that is mapped already (a fresh ~24 MB buffer at 2 509
  // tensors is filled a page fault at a time on TF's threads).
  std::vector<std::string> spare;
  // by the address of the debug op's DebugNodeKey (see append_prebuilt in capture.cc)
  std::unordered_map<const void*, Prebuilt> prebuilt;
  bool open = true;
  int64_t failed = 0;  // tensors not captured (out of memory): counted, never thrown into TF
  // tests: make the next N captures fail as an allocation would (atomic: read by every
  // capture, so not one more acquisition of mu, which TF's threads contend for)
  std::atomic<int64_t> fail_next{0};
  std::atomic<int64_t> fail_fills{0};   // tests: the next N tfbb_fill calls run out of memory
  // DebugIdentity float tensors holding NaN or +-Inf (black-box mode); counted after the lock
  std::atomic<int64_t> nonfinite{0};
  std::atomic<int> copying{0};   // contents being copied into the arena outside the lock
};

}  // namespace tfbb

#endif  // TFBLACKBOX_CAPTURE_SINK_H_
