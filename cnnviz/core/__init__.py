"""The hooked-model core: model specs, weights, layer names, image I/O, records."""
