"""sepkit benchmarks: one module ``bench_<op>.py`` per op, run by ``python -m perf``.

Each module defines ``run(ctx)``; :class:`perf.harness.Context` times with
``triton.testing.do_bench`` (median and 20/80 % quantiles), measures peak memory, and records rows
(one schema for every op) that ``perf.report`` turns into JSON, a Markdown table and PNG plots.
"""
