/* A stand-in for NVIDIA's libnvidia-ml.so.1 on machines without a GPU (tests/test_system.py):
 * one "Stub GPU" whose utilization can be read STUB_NVML_READS times, after which every read
 * fails with NVML_ERROR_GPU_IS_LOST (15), as a GPU falling off the bus does. Loaded by
 * NVIDIA's own Python bindings (pynvml) through LD_LIBRARY_PATH; any function not here is
 * "not found", which the recorder treats as a metric the device does not have. */
#include <stdlib.h>
#include <string.h>

typedef struct { unsigned long long total, free, used; } nvml_memory;
typedef struct { unsigned int gpu, memory; } nvml_utilization;
static int reads = 0;

int nvmlInitWithFlags(unsigned int flags) { (void)flags; return 0; }
int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
const char *nvmlErrorString(int r) { return r == 15 ? "GPU is lost" : "stub NVML error"; }
int nvmlDeviceGetCount_v2(unsigned int *n) { *n = 1; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) { (void)i; *h = (void *)1; return 0; }
int nvmlDeviceGetName(void *h, char *name, unsigned int len) {
    (void)h; strncpy(name, "Stub GPU", len); return 0;
}
int nvmlDeviceGetMemoryInfo(void *h, nvml_memory *m) {
    (void)h; m->total = 16ULL << 30; m->used = 4ULL << 30; m->free = 12ULL << 30; return 0;
}
int nvmlSystemGetCudaDriverVersion(int *v) { *v = 12020; return 0; }
int nvmlSystemGetDriverVersion(char *v, unsigned int len) { strncpy(v, "535.1", len); return 0; }
int nvmlDeviceGetUtilizationRates(void *h, nvml_utilization *u) {
    const char *limit = getenv("STUB_NVML_READS");
    (void)h;
    if (++reads > (limit ? atoi(limit) : 1000000)) return 15;
    u->gpu = 40; u->memory = 10; return 0;
}
