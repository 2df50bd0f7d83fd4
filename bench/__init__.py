"""Speed benchmarks (not tests, not in CI): run from the repository root as `python -m bench.<script>`."""
