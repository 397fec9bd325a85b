"""``python -m benchmarks``: the benchmark suite (benchmarks/run.py)."""

from benchmarks.run import main

if __name__ == "__main__":  # not again in the worker processes of `rebuild --jobs`
    main()
