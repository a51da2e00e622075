"""Benchmarks that print tables (not tests). Run from the repository root, each as a module:
``python -m bench.reconstruct``, ``python -m bench.train``, … (``--help`` for each)."""
