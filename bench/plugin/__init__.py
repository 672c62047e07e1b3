"""The pytest plugin (``pytest11`` entry point) and the ``archbench_bench`` fixture."""
