"""Subclass Explorer's benchmark suite (issue 5, part 1): ``python -m bench cpu`` / ``python -m bench gpu``.

Prints a table of ratios measured side by side in one process (or in one child process per slow
job, under a time budget) and writes them as JSON. :mod:`bench.suite` holds the sections and
the per-mode presets, :mod:`bench.report` what a row and its ratio mean. Nothing is imported
here, so the child processes (:mod:`bench._worker`) load only what their task needs.
"""
