"""Measuring: the engine (plan, schedule, resume), the worker processes, the timing harness, runtimes, export."""
