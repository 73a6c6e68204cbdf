"""Backends run one cell's workload and return measured figures. Each engine generates greedily
with a KV cache; `measure` repeats passes and wraps them in the meters."""
