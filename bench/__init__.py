"""Benchmarks of the pipeline against what users would do instead (`make bench`).

Benchmarks, not tests: nothing here asserts a timing. Results go to bench/results/latest.json
and the table in docs/benchmarks.md.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
