/* Simulated CUDA driver library: real ELF with the real soname, fake answers. */
#include <stddef.h>
#ifndef DRIVER_VERSION
#define DRIVER_VERSION "0.0.0"
#endif
int cuInit(unsigned int flags) { (void)flags; return 0; }
int cuDriverGetVersion(int *version) { if (version) *version = 12040; return version ? 0 : 1; }
const char *nvbind_simulated_driver(void) { return DRIVER_VERSION; }
