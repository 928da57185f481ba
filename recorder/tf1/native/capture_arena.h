// Black-box mode's memory for captured contents (capture.cc): an arena of chunks, and the
// copy into it that checks for NaN/Inf on the way.
#ifndef TFBLACKBOX_CAPTURE_ARENA_H_
#define TFBLACKBOX_CAPTURE_ARENA_H_

#include <cstddef>

#include "capture_sink.h"
#include "tensorflow/core/framework/types.pb.h"

namespace tfbb {

// The arena's chunks: a sixteenth of a take's content (tfbb_take), 64 kB (a 24-tensor graph's
// step is ~50 kB) to 4 MB
constexpr size_t kMinChunk = 64 << 10, kMaxChunk = 4 << 20;

// n bytes of the sink's arena, 64-byte aligned: the last chunk's, a spare chunk's or a new
// one's. Called with sink->mu held; throws std::bad_alloc.
char* arena_alloc(Sink* sink, size_t n);

// Copies a plain tensor's n bytes of content to `dst` (from arena_alloc) with stores that
// bypass the cache; with `check` (the ring's DebugIdentity tensors), tells in the same pass
// whether a float of `dtype` in it is NaN or +-Inf (false for other dtypes).
bool copy_content(char* dst, const char* src, size_t n, tensorflow::DataType dtype, bool check);

}  // namespace tfbb

#endif  // TFBLACKBOX_CAPTURE_ARENA_H_
