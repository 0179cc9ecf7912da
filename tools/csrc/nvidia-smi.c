/* Simulated nvidia-smi: says plainly that it is a stand-in. */
#include <stdio.h>
#ifndef DRIVER_VERSION
#define DRIVER_VERSION "0.0.0"
#endif
int main(void) { printf("NVIDIA-SMI (nvbind simulated host) Driver Version: %s\n", DRIVER_VERSION); return 0; }
