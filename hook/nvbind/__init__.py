"""nvbind: inject NVIDIA GPUs into OCI containers."""
__version__ = "0.1.0"
