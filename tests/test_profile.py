"""The blocked availability profile against a plain list, with thousands of segments."""

from __future__ import annotations

import bisect

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from htcsim.kernel import AvailabilityProfile

N_RES = 4


def plain_earliest(times: list[int], free: list[int], need: int, wall: int, now: int) -> int:
    """First breakpoint (or now) from which ``need`` is free for ``wall`` seconds."""
    t = np.array(times)
    short = np.concatenate(([0], np.cumsum(np.array(free) < need)))
    starts = np.maximum(t, now)
    window_end = np.searchsorted(t, starts + wall, side="left")
    fits = short[window_end] - short[np.arange(len(t))] == 0
    return int(starts[np.argmax(fits)]) if fits.any() else -1


def plain_take(times: list[int], free: list[int], s: int, e: int, need: int) -> None:
    for t in (s, e):
        k = bisect.bisect_left(times, t)
        if k == len(times) or times[k] != t:
            times.insert(k, t)
            free.insert(k, free[k - 1])
    for k in range(bisect.bisect_left(times, s), bisect.bisect_left(times, e)):
        free[k] -= need


def vec(cores: int) -> np.ndarray:
    return np.array([cores, 0, 0, 0], dtype=np.int64)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(50, 1500))
def test_blocked_profile_matches_a_plain_list(seed: int, n_ops: int) -> None:
    check_against_plain_list(seed, n_ops)


def test_many_blocks_are_split_and_still_agree() -> None:
    profile = check_against_plain_list(seed=5, n_ops=3000)
    assert profile.n_blocks > 10


def check_against_plain_list(seed: int, n_ops: int) -> AvailabilityProfile:
    rng = np.random.default_rng(seed)
    total = 64
    start_free = int(rng.integers(0, total))
    profile = AvailabilityProfile(0, vec(start_free))
    times, free = [0], [start_free]
    t = 0
    released = start_free
    for _ in range(int(rng.integers(0, 400))):  # running jobs' requested ends
        t += int(rng.integers(1, 50))
        step = int(rng.integers(0, max(1, total - released) + 1))
        released += step
        profile.release_at(t, vec(step))
        times.append(t)
        free.append(free[-1] + step)
    for _ in range(n_ops):  # queued jobs take their earliest slot, in order
        need = int(rng.integers(1, total + 1))
        wall = int(rng.integers(1, 400))
        expected = plain_earliest(times, free, need, wall, 0)
        got = profile.earliest(vec(need), wall, 0)
        assert got == expected
        if got >= 0:
            profile.take(got, got + wall, vec(need))
            plain_take(times, free, got, got + wall, need)
    seg_t, seg_f = profile.segments()
    assert seg_t.tolist() == times
    assert seg_f[:, 0].tolist() == free
    assert (np.diff(seg_t) > 0).all()
    return profile
