// The ring's copies (capture_arena.h). The ring's copy is not read again unless a trigger
// writes its step, so it is written with non-temporal stores: ordinary stores would first
// read every line of the cold destination and push TF's working set out of the cache. Before
// the arena, the ring held TF's own tensors (the Copy node's outputs) for its K+1 steps; TF's
// next Copy then wrote each step into memory that had left the cache, and the ring's loop at
// 2 509 tensors cost 15-48% more CPU (three pairs, tools/bench_blackbox's graph).
#include "capture_arena.h"
#include "capture_event.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace tfbb {

namespace {

#if defined(__x86_64__)
// Lanes of v whose `m` bits are all set, as all-ones lanes (SSE2 has no 64-bit compare: the
// 32-bit one, whose low halves the caller masks out, see kHighHalves).
template <typename Bits>
__m128i all_ones(__m128i v, __m128i m) {
  const __m128i x = _mm_and_si128(v, m);
  return sizeof(Bits) == 2 ? _mm_cmpeq_epi16(x, m) : _mm_cmpeq_epi32(x, m);
}
constexpr int kHighHalves = 0xF0F0;   // movemask bytes 4-7 and 12-15: each qword's high dword

template <typename Bits>
__m128i splat(Bits mask) {
  return sizeof(Bits) == 2 ? _mm_set1_epi16(static_cast<int16_t>(mask))
         : sizeof(Bits) == 4 ? _mm_set1_epi32(static_cast<int32_t>(mask))
                             : _mm_set1_epi64x(static_cast<int64_t>(mask));
}
#endif

// dst is 64-byte aligned (arena_alloc); mask 0 checks nothing.
template <typename Bits>
bool stream_checked(char* dst, const char* src, size_t n, Bits mask) {
  size_t i = 0;
  bool bad = false;
#if defined(__x86_64__)
  const __m128i m = splat<Bits>(mask);
  __m128i any = _mm_setzero_si128();
  for (; i + 64 <= n; i += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 32));
    const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 48));
    if (mask)
      any = _mm_or_si128(any, _mm_or_si128(_mm_or_si128(all_ones<Bits>(a, m), all_ones<Bits>(b, m)),
                                           _mm_or_si128(all_ones<Bits>(c, m), all_ones<Bits>(d, m))));
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 48), d);
  }
  _mm_sfence();   // the streamed stores are seen before the step is taken on another thread
  if (mask) bad = (_mm_movemask_epi8(any) & (sizeof(Bits) == 8 ? kHighHalves : 0xFFFF)) != 0;
#endif
  std::memcpy(dst + i, src + i, n - i);
  if (mask && !bad) bad = exponent_all_ones<Bits>(src + i, (n - i) / sizeof(Bits), mask);
  return bad;
}

}  // namespace

char* arena_alloc(Sink* sink, size_t n) {
  Arena& a = sink->arena;
  const size_t need = (n + 63) & ~size_t{63};   // each copy starts on a cache line
  if (a.chunks.empty() || a.chunks.back().cap - a.used < need) {
    Chunk c;
    if (!sink->spare_chunks.empty() && sink->spare_chunks.back().cap >= need) {
      c = std::move(sink->spare_chunks.back());
      sink->spare_chunks.pop_back();
    } else {
      c.cap = std::max(need, std::max(sink->chunk_size, kMinChunk));
      void* p = nullptr;
      if (posix_memalign(&p, 64, c.cap) != 0) throw std::bad_alloc();
      c.p.reset(static_cast<char*>(p));
    }
    a.chunks.push_back(std::move(c));
    a.used = 0;
  }
  char* at = a.chunks.back().p.get() + a.used;
  a.used += need;
  return at;
}

bool copy_content(char* dst, const char* src, size_t n, tensorflow::DataType dtype, bool check) {
  if (check) {
    switch (dtype) {
      case tensorflow::DT_FLOAT:
      case tensorflow::DT_COMPLEX64:
        return stream_checked<uint32_t>(dst, src, n, 0x7f800000u);
      case tensorflow::DT_DOUBLE:
      case tensorflow::DT_COMPLEX128:
        return stream_checked<uint64_t>(dst, src, n, 0x7ff0000000000000ull);
      case tensorflow::DT_HALF:
        return stream_checked<uint16_t>(dst, src, n, 0x7c00u);
      case tensorflow::DT_BFLOAT16:
        return stream_checked<uint16_t>(dst, src, n, 0x7f80u);
      default:
        break;
    }
  }
  return stream_checked<uint32_t>(dst, src, n, 0);
}

}  // namespace tfbb
