"""The one bracketing search: the largest value that passes a monotone test (max batch, max QPS). Pure.

    b = Bracket(start=8, limit=4096, integer=True)            # --find-max-batch: whole batches, up to a limit
    b = Bracket(start=128.0, rel_tol=0.10, down_steps=7)        # --find-max-qps: QPS to within 10%
    s = step(b, trials)            # trials: ((value, passed), ...) in the order they ran, e.g. read back from disk
    s.next                         # the value to try now, or None when the search is over
    s.best, s.first_failure        # the answer and its bracket: best passed, first_failure (> best) did not

The search never holds state between trials: ``step`` replays the recorded trials through the same deterministic
walk and says what comes next. So the engine can run each search's next trial inside its interleaved rounds, beside
every other cell, and ``--resume`` continues a search from the trials on disk with nothing else saved.

The walk (a test that passes up to some value and fails above it is assumed; noise near the edge can swap a pass
and a fail there, and bisection then answers inside that noise band: the bracket says how wide):

1. try ``start``;
2. passed: multiply by ``growth`` while trials pass (at most ``up_steps`` times, never beyond ``limit``; a pass at
   ``limit`` ends the search there: ``hit_limit``); failed: divide by ``growth`` while trials fail (at most
   ``down_steps`` times; 0 = the start must pass, else the answer is 0). That brackets the answer in
   [last pass, first fail];
3. bisect the bracket until it is one apart (``integer``) or (first fail - last pass) / last pass <= ``rel_tol``.

Trials: about log2(answer / start) + log2(1 / tol) (or + log2(answer) for whole numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Bracket:
    start: float
    limit: float = math.inf  # largest value ever tried (--max-batch-limit)
    growth: float = 2.0
    up_steps: int = 20  # multiplications at most (start x 2^20)
    down_steps: int = 0  # divisions at most when the start fails (0: the start must pass)
    integer: bool = False  # whole numbers: bisect until one apart, midpoints rounded down
    rel_tol: float = 0.10  # real numbers: bisect until (fail - pass) / pass <= rel_tol

    def __post_init__(self) -> None:
        if not (self.start > 0 and math.isfinite(self.start)) or not self.limit >= self.start:
            raise ValueError(f"Bracket: need 0 < start <= limit, got start={self.start}, limit={self.limit}")
        if not self.growth > 1 or self.up_steps < 0 or self.down_steps < 0 or not 0 < self.rel_tol < 1:
            raise ValueError(f"Bracket: need growth > 1, steps >= 0, 0 < rel_tol < 1; got {self}")
        if self.integer and self.start != int(self.start):
            raise ValueError(f"Bracket: an integer search starts at a whole number, not {self.start}")


@dataclass(frozen=True)
class SearchState:
    trials: tuple[tuple[float, bool], ...]  # (value, passed) in the order they ran
    next: float | None  # the value to try now; None: the search is over
    best: float  # largest value that passed (0: none did)
    first_failure: float | None  # smallest value above ``best`` that failed (None: none failed above it)
    hit_limit: bool = False  # every trial passed up to ``limit``

    @property
    def done(self) -> bool:
        return self.next is None

    @property
    def rel_width(self) -> float | None:
        """(first failure - best) / best: how far apart the answer's bracket is, relative to the answer."""
        if not self.best or self.first_failure is None:
            return None
        return (self.first_failure - self.best) / self.best


def _round3(q: float) -> float:
    """Three significant figures: real-valued trial points that read well and repeat exactly on replay."""
    return float(f"{q:.3g}")


def _walk(b: Bracket) -> Generator[float, bool, tuple[float, float | None, bool]]:
    """Yields the values to try, receives whether each passed; returns (best, first_failure, hit_limit)."""
    def up(q: float) -> float:
        return min(math.floor(q * b.growth) if b.integer else _round3(q * b.growth), b.limit)

    def down(q: float) -> float:
        return max(1.0, math.floor(q / b.growth)) if b.integer else _round3(q / b.growth)

    q = b.start
    best, fail = 0.0, None
    if (yield q):
        best = q
        for _ in range(b.up_steps):
            if q >= b.limit:
                return best, None, True
            q = up(q)
            if not (yield q):
                fail = q
                break
            best = q
        else:
            return best, None, best >= b.limit
    else:
        fail = q
        for _ in range(b.down_steps):
            nq = down(q)
            if nq >= q:
                break
            q = nq
            if (yield q):
                best = q
                break
            fail = q
        if not best:
            return 0.0, fail, False
    lo, hi = best, fail
    while (hi - lo > 1) if b.integer else ((hi - lo) / lo > b.rel_tol):
        mid = float((lo + hi) // 2) if b.integer else _round3((lo + hi) / 2)
        if mid in (lo, hi):
            break
        if (yield mid):
            lo = mid
        else:
            hi = mid
    return lo, hi, False


def step(b: Bracket, trials: Sequence[tuple[float, bool]] = ()) -> SearchState:
    """Replay ``trials`` through the walk and say what to try next (``SearchState.next``) or the answer.

    ValueError when a trial is not the one the walk asks for at that point (trials of another search, or an
    edited file): a search is only resumable from its own trials."""
    walk = _walk(b)
    want = next(walk)
    done: tuple[float, float | None, bool] | None = None
    for i, (value, passed) in enumerate(trials):
        if done is not None:
            raise ValueError(f"trial {i + 1} ({value:g}) comes after the search ended")
        if not math.isclose(value, want, rel_tol=1e-9):
            raise ValueError(f"trial {i + 1} tried {value:g} where the search tries {want:g}")
        try:
            want = walk.send(bool(passed))
        except StopIteration as stop:
            done = stop.value
    tried = tuple((float(v), bool(p)) for v, p in trials)
    if done is None:
        passes = [v for v, p in tried if p]
        fails = [v for v, p in tried if not p and (not passes or v > max(passes))]
        return SearchState(tried, want, max(passes, default=0.0), min(fails, default=None))
    best, fail, hit = done
    return SearchState(tried, None, best, fail, hit)


def drive(b: Bracket, passes: Callable[[float], bool]) -> SearchState:
    """Run the search to its end here, one ``passes(value)`` call per trial (a search whose trials are cheap or
    already ordered; the engine instead runs one ``step`` per round, interleaved with other cells)."""
    trials: list[tuple[float, bool]] = []
    while True:
        s = step(b, trials)
        if s.done:
            return s
        trials.append((s.next, bool(passes(s.next))))
