"""The throughput benchmark behind ``bench_eval_throughput.py``: the variants it times (``variants``: the
evaluator's flag sets as backends), the inference-only ceiling (``ceiling``), one variant's timed runs and
their AP check (``runs``), one batch size end to end (``batch``), the time to metrics (``ttm``), the pipeline
capacity on replayed outputs (``capacity``), decoding alone (``decode``) and the tables (``table``)."""
