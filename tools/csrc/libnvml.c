/* A fake libnvidia-ml.so.1 that answers, for the benchmark's simulated host (bench/run.py),
 * so that NVIDIA's `nvidia-ctk cdi generate --mode nvml` can run where there is no GPU.
 * It answers what nvidia-ctk 1.20 asks (found by running it: symbol lookup errors, ltrace),
 * with the simulated host's facts given at build time:
 *   -DDRIVER_VERSION="550.54.14" -DSIM_GPUS=8 -DSIM_UUIDS='{"GPU-...", ...}'
 * GPU i: minor i, PCI 0000:(0x10+i):00.0, "NVIDIA H100 80GB HBM3", compute 9.0, MIG off
 * (tools/simhost.py builds the same devices, procfs files and UUIDs).
 * Signatures and struct layouts: NVIDIA's nvml.h (CUDA 12). Not used by nvbind, whose
 * hooks and `cdi generate --root` read procfs. */
#include <stdio.h>
#include <string.h>

#ifndef DRIVER_VERSION
#define DRIVER_VERSION "550.54.14"
#endif
#ifndef SIM_GPUS
#define SIM_GPUS 1
#endif
#ifndef SIM_UUIDS
#define SIM_UUIDS {"GPU-00000000-0000-0000-0000-000000000000"}
#endif
#define CUDA_DRIVER_VERSION 12040

typedef int nvmlReturn_t;
enum { NVML_SUCCESS = 0, NVML_ERROR_UNINITIALIZED = 1, NVML_ERROR_INVALID_ARGUMENT = 2,
       NVML_ERROR_NOT_SUPPORTED = 3, NVML_ERROR_INSUFFICIENT_SIZE = 7, NVML_ERROR_NOT_FOUND = 6,
       NVML_ERROR_FUNCTION_NOT_FOUND = 13 };

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

struct dev { int index; };
typedef struct dev *nvmlDevice_t;

static const char *const uuids[SIM_GPUS] = SIM_UUIDS;
static struct dev devs[SIM_GPUS];
static int inited;

static nvmlReturn_t put(char *out, unsigned int len, const char *s) {
    if (!out)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(s) + 1 > len)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(out, s);
    return NVML_SUCCESS;
}

static int idx(nvmlDevice_t d) {
    return (d >= devs && d < devs + SIM_GPUS) ? d->index : -1;
}

#define DEV(d) int i = idx(d); if (i < 0) return NVML_ERROR_INVALID_ARGUMENT

nvmlReturn_t nvmlInit_v2(void) {
    for (int i = 0; i < SIM_GPUS; i++)
        devs[i].index = i;
    inited++;
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlInit(void) { return nvmlInit_v2(); }
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return nvmlInit_v2(); }
nvmlReturn_t nvmlShutdown(void) { if (inited) inited--; return NVML_SUCCESS; }

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *v, unsigned int len) { return put(v, len, DRIVER_VERSION); }
nvmlReturn_t nvmlSystemGetNVMLVersion(char *v, unsigned int len) { return put(v, len, "12." DRIVER_VERSION); }
nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) { *v = CUDA_DRIVER_VERSION; return NVML_SUCCESS; }
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) { *v = CUDA_DRIVER_VERSION; return NVML_SUCCESS; }

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) { *n = SIM_GPUS; return NVML_SUCCESS; }
nvmlReturn_t nvmlDeviceGetCount(unsigned int *n) { return nvmlDeviceGetCount_v2(n); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d) {
    if (i >= SIM_GPUS) return NVML_ERROR_INVALID_ARGUMENT;
    *d = &devs[i];
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int i, nvmlDevice_t *d) {
    return nvmlDeviceGetHandleByIndex_v2(i, d);
}
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *u, nvmlDevice_t *d) {
    for (int i = 0; i < SIM_GPUS; i++)
        if (strcmp(u, uuids[i]) == 0) { *d = &devs[i]; return NVML_SUCCESS; }
    return NVML_ERROR_NOT_FOUND;
}
nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *out) { DEV(d); *out = i; return NVML_SUCCESS; }
nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *u, unsigned int len) { DEV(d); return put(u, len, uuids[i]); }
nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned int *m) { DEV(d); *m = i; return NVML_SUCCESS; }
nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *n, unsigned int len) {
    DEV(d); (void)i; return put(n, len, "NVIDIA H100 80GB HBM3");
}
nvmlReturn_t nvmlDeviceGetBrand(nvmlDevice_t d, int *b) { DEV(d); (void)i; *b = 2; return NVML_SUCCESS; }
nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t d, unsigned int *a) {
    DEV(d); (void)i; *a = 9; /* NVML_DEVICE_ARCH_HOPPER */ return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor) {
    DEV(d); (void)i; *major = 9; *minor = 0; return NVML_SUCCESS;
}
static nvmlReturn_t pci(nvmlDevice_t d, nvmlPciInfo_t *p) {
    DEV(d);
    memset(p, 0, sizeof *p);
    p->domain = 0; p->bus = 0x10 + i; p->device = 0;
    p->pciDeviceId = 0x233010de; p->pciSubSystemId = 0x16c110de;
    snprintf(p->busId, sizeof p->busId, "00000000:%02X:00.0", (0x10 + i) & 0xff);
    snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "0000:%02X:00.0", (0x10 + i) & 0xff);
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *p) { return pci(d, p); }
nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t d, nvmlPciInfo_t *p) { return pci(d, p); }
nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t d, nvmlPciInfo_t *p) { return pci(d, p); }
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
    DEV(d); (void)i; m->total = 80ULL << 30; m->used = 0; m->free = m->total; return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *cur, unsigned int *pending) {
    DEV(d); (void)i; *cur = 0; *pending = 0; return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *n) {
    DEV(d); (void)i; *n = 0; return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t d, unsigned int *is) {
    DEV(d); (void)i; *is = 0; return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int n, nvmlDevice_t *m) {
    (void)d; (void)n; (void)m; return NVML_ERROR_NOT_FOUND;
}
nvmlReturn_t nvmlDeviceGetGpuInstances(nvmlDevice_t d, unsigned int profile, void *gis, unsigned int *n) {
    (void)d; (void)profile; (void)gis; *n = 0; return NVML_ERROR_NOT_SUPPORTED;
}
nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfo(nvmlDevice_t d, unsigned int p, void *info) {
    (void)d; (void)p; (void)info; return NVML_ERROR_NOT_SUPPORTED;
}
nvmlReturn_t nvmlDeviceGetComputeMode(nvmlDevice_t d, int *m) { DEV(d); (void)i; *m = 0; return NVML_SUCCESS; }
