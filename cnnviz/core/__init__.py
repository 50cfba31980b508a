"""The hooked-model core: model specs, weights, layer names, named activations with early exit, receptive
fields, image I/O, records, memory and devices. It imports nothing of cnnviz above it."""
