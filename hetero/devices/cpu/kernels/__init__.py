"""CPU kernels, one module per op family; every module here is imported by the kernel table."""
