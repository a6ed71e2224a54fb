"""Benchmark helpers (bench_eval_throughput.py): the replay backend, repeated data sets.
Nothing here is used by the evaluators themselves."""
