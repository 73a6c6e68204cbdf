"""Micro-benchmarks run only under `--benchmark-only` (`make microbench`).

Benchmark files are named bench_*.py, which pytest's default `test_*.py` pattern never collects, so
the normal test run skips them; this hook collects them when --benchmark-only is given for the
folder. A bench file named explicitly on the command line is collected by pytest itself.
"""
import pytest


def pytest_collect_file(file_path, parent):
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path) or not parent.config.getoption("benchmark_only", False):
        return None
    return pytest.Module.from_parent(parent, path=file_path)
