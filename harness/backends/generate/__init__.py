"""transformers generate() as a backend, for comparison with the harness engine."""
