"""Device plugins (CPU, GPU via OpenCL, MOCK) and the device-string registry."""
