"""The pytest plugin (``pytest11`` entry point) and the ``archbench_bench`` fixture.

    from archbench.bench.plugin import assert_budget     # in a test: assert_budget(rec, "p95_ms<=20")
"""

from archbench.bench.plugin.fixture import BudgetFailed, BudgetInconclusive, assert_budget, check_budget

__all__ = ["BudgetFailed", "BudgetInconclusive", "assert_budget", "check_budget"]
