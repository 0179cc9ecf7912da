/* Simulated NVIDIA driver library (any but libcuda): real ELF, one marker symbol. */
#ifndef DRIVER_VERSION
#define DRIVER_VERSION "0.0.0"
#endif
const char *nvbind_simulated_driver(void) { return DRIVER_VERSION; }
int nvmlInit_v2(void) { return 0; }
