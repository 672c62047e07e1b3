"""analyze.search: the one bracketing search (max batch, max QPS), driven trial by trial and replayed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archbench.bench.analyze.search import Bracket, step


def run(b: Bracket, passes) -> tuple:
    """Drive the search to the end against ``passes``, one step per trial, as the engine does across rounds."""
    trials: list[tuple[float, bool]] = []
    for _ in range(200):
        s = step(b, trials)
        if s.done:
            return s
        trials.append((s.next, passes(s.next)))
    raise AssertionError("the search did not end in 200 trials")


@given(threshold=st.integers(1, 5000), start=st.integers(1, 64))
def test_integer_search_finds_the_exact_largest_passing_value(threshold: int, start: int) -> None:
    s = run(Bracket(start=start, limit=1 << 20, integer=True, up_steps=64), lambda b: b <= threshold)
    if start > threshold:
        assert (s.best, s.first_failure) == (0, start)
    else:
        assert (s.best, s.first_failure) == (threshold, threshold + 1)
        assert len(s.trials) <= math.log2(threshold / start) + math.log2(threshold) + 4  # doubling + bisection


def test_integer_search_stops_at_its_limit() -> None:
    s = run(Bracket(start=3, limit=40, integer=True, up_steps=64), lambda b: True)
    assert s.hit_limit and s.best == 40 and s.first_failure is None
    assert [v for v, _ in s.trials] == [3, 6, 12, 24, 40]


@given(threshold=st.floats(1.0, 1e5), start=st.sampled_from([16.0, 128.0, 1000.0]), tol=st.sampled_from([0.05, 0.1]))
def test_real_search_brackets_the_threshold_within_its_tolerance(threshold: float, start: float, tol: float) -> None:
    s = run(Bracket(start=start, rel_tol=tol, down_steps=7), lambda q: q <= threshold)
    if s.best == 0:  # nothing passed within 7 halvings of the start
        assert threshold < start / 2**7 * 1.01
        return
    assert s.best <= threshold < s.first_failure
    # three-significant-figure midpoints can stop a bisection just short of the tolerance
    assert s.rel_width <= tol + 0.02


def test_replay_refuses_trials_of_another_search() -> None:
    b = Bracket(start=8, limit=100, integer=True)
    with pytest.raises(ValueError, match="tried 9 where the search tries 8"):
        step(b, [(9, True)])
    with pytest.raises(ValueError, match="after the search ended"):
        step(b, [(8, False), (4, True)])


def test_a_partial_search_reports_its_bracket_so_far() -> None:
    b = Bracket(start=128.0, rel_tol=0.1, down_steps=7)
    s = step(b, [(128.0, True), (256.0, True), (512.0, False)])
    assert (s.best, s.first_failure, s.next) == (256.0, 512.0, 384.0)
    assert not s.done and s.rel_width == 1.0


@pytest.mark.parametrize("kwargs", [dict(start=0), dict(start=4, limit=2), dict(start=1, growth=1.0),
                                    dict(start=1.5, integer=True), dict(start=1, rel_tol=0)])
def test_bad_brackets_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Bracket(**kwargs)
