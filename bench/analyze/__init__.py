"""Analysis: statistics, budgets, comparisons, selection. Pure functions returning dataclasses."""
