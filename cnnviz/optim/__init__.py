"""The one optimization engine: ``optimize`` (single scale or coarse to fine), L-BFGS on the device, one
evaluation (a CUDA graph where it can be), loss readout without host syncs, and the CUDA-graph helper."""
