"""PyTorch backend: eager loop on CPU; lean decoder with a compiled step in a CUDA graph on GPU."""
