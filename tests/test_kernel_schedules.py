"""Hand-computed schedules: each expected start time is worked out in the comments."""

from __future__ import annotations

import pytest

from htcsim.kernel import Kernel
from tests.harness import run_kernel, run_kernel_detailed
from tests.reference import RefJob, simulate


def J(job_id: int, submit: int, cores: int, walltime: int, run: int | None = None) -> RefJob:
    return RefJob(job_id, submit, cores, walltime, walltime if run is None else run)


# 4 one-core nodes. A runs 0..100 on 2 cores. B needs all 4: head, shadow = 100.
# C (2 cores, 60 s) ends at 60 <= 100: EASY and conservative backfill it at 0;
# strict order (none) starts it after B, at 150.
WORKED = [J(1, 0, 2, 100), J(2, 0, 4, 50), J(3, 0, 2, 60)]


@pytest.mark.parametrize(
    ("backfill", "starts"),
    [("none", [0, 100, 150]), ("easy", [0, 100, 0]), ("conservative", [0, 100, 0])],
)
def test_worked_example(backfill: str, starts: list[int]) -> None:
    start, end = run_kernel(WORKED, 4, 1, backfill)
    assert start == starts
    assert end == [s + w for s, w in zip(starts, [100, 50, 60], strict=True)]


def test_easy_extra_processors_rule() -> None:
    # 6 cores. A: 4 cores 0..100. B (head) needs 4: shadow 100, free then 6,
    # extra = 2. C: 1 core for 500 s outlives the shadow but 1 <= extra: starts
    # at 0 (extra -> 1). D: 2 cores for 500 s: 2 > extra 1 and ends after the
    # shadow: waits. B starts at 100 (A ends); D at 100 too (6-1-4 = 1 free? no:
    # at 100 free = 6 - 1(C) - 4(B) = 1 < 2), so D waits for B's end at 200.
    jobs = [J(1, 0, 4, 100), J(2, 0, 4, 100), J(3, 0, 1, 500), J(4, 0, 2, 500)]
    start, _ = run_kernel(jobs, 6, 1, "easy")
    assert start == [0, 100, 0, 200]


def test_easy_never_backfills_a_job_that_would_delay_the_head() -> None:
    # 4 cores. A: 3 cores 0..100. B needs 4 (head, shadow 100, extra 0).
    # C: 1 core, 150 s: would end at 150 > 100 and extra is 0: must not start.
    jobs = [J(1, 0, 3, 100), J(2, 0, 4, 10), J(3, 0, 1, 150)]
    start, _ = run_kernel(jobs, 4, 1, "easy")
    assert start == [0, 100, 110]


def test_conservative_protects_every_reservation_easy_only_the_head() -> None:
    # 4 cores. A: 2 cores 0..100 (requested 100). B: 4 cores, 100 s -> reserved
    # 100..200. C: 3 cores, 100 s -> conservative reserves 200..300. D: 1 core,
    # 250 s, submitted at 1: under EASY it fits now (2 free) and uses the
    # extra core? extra at shadow 100 = 4 - 4 = 0 and it ends at 251 > 100:
    # EASY refuses it; conservative finds the earliest slot for D: [1, 251)
    # would take a core during B's 100..200 window (4 needed): refused; the
    # earliest is 300 (after C), or 200? during 200..300 C uses 3 of 4: one
    # core is free, so D fits at 200 for [200, 450)? No: it needs 250 s and at
    # 300 all 4 are free, so [200, 450) has 1 free in 200..300 and 4 after: fits.
    jobs = [J(1, 0, 2, 100), J(2, 0, 4, 100), J(3, 0, 3, 100), J(4, 1, 1, 250)]
    start, _ = run_kernel(jobs, 4, 1, "conservative")
    assert start == [0, 100, 200, 200]
    start, _ = run_kernel(jobs, 4, 1, "easy")
    # EASY: B at 100, then C is head at 200 (shadow 200); D (1 core, ends 450)
    # at 100 has 0 free; at 200 B ends: C starts (3 cores), D fits in the last core.
    assert start == [0, 100, 200, 200]


def test_early_completion_compresses_conservative_reservations() -> None:
    # 2 cores. A: 2 cores, requested 100, runs 10. B: 2 cores reserved at 100;
    # A ends at 10, the profile is rebuilt and B starts at 10.
    jobs = [J(1, 0, 2, 100, run=10), J(2, 5, 2, 50)]
    for backfill in ("none", "easy", "conservative"):
        start, end = run_kernel(jobs, 2, 1, backfill)
        assert start == [0, 10]
        assert end == [10, 60]


def test_job_is_killed_at_its_requested_time() -> None:
    jobs = [J(1, 0, 1, 30, run=500), J(2, 0, 1, 10)]
    start, end = run_kernel(jobs, 1, 1, "easy")
    assert start == [0, 30]
    assert end == [30, 40]


def test_zero_length_job_ends_at_once_and_frees_its_cores_the_same_instant() -> None:
    # 1 core. A: run 0 at t=0. B: submitted at 0 too; after A ends (same
    # instant) another pass starts B at 0.
    jobs = [J(1, 0, 1, 5, run=0), J(2, 0, 1, 5)]
    start, end = run_kernel(jobs, 1, 1, "easy")
    assert start == [0, 0]
    assert end == [0, 5]


# A requested time of 0 s (an SWF job that ran 0 s and requested nothing) is
# honoured: the job needs its cores free at the instant it starts, ends at that
# instant, and takes no time in the availability profile.


def test_a_zero_second_request_takes_no_time_in_the_profile() -> None:
    # 2 cores, conservative. A: 2 cores 0..10. Z: 2 cores, 0 s: reserved at 10,
    # where the cores are free; it takes no time there, so B (2 cores, 5 s) is
    # reserved at 10 too, not at 11. At 10 Z starts and ends; the pass that
    # follows at the same instant starts B: 10..15.
    jobs = [J(1, 0, 2, 10), J(2, 0, 2, 0), J(3, 0, 2, 5)]
    promised: list[list[int]] = []

    def first_pass(kernel: Kernel, now: int) -> None:
        if now == 0:
            promised.append(kernel.reservations().tolist())

    run = run_kernel_detailed(jobs, 2, 1, "conservative", on_pass=first_pass)
    assert promised == [[-1, 10, 10]]
    assert run.start == [0, 10, 10]
    assert run.end == [10, 10, 15]


@pytest.mark.parametrize("backfill", ["none", "easy", "conservative"])
def test_a_zero_second_job_waits_for_its_cores(backfill: str) -> None:
    # 1 core. A: 0..10. Z (0 s, run 0, submitted at 3) needs the core for an
    # instant: it starts when A ends, at 10, and ends at 10; B (submitted at 5)
    # starts at the same instant, after it.
    jobs = [J(1, 0, 1, 10), J(2, 3, 1, 0), J(3, 5, 1, 5)]
    start, end = run_kernel(jobs, 1, 1, backfill)
    assert start == [0, 10, 10]
    assert end == [10, 10, 15]


def test_sjf_puts_a_zero_second_request_before_a_one_second_one() -> None:
    # 1 core busy 0..10 with A. B asks 1 s (submitted at 1), Z 0 s (at 2): SJF
    # runs Z first at 10 (it ends at once), then B at 10, ending at 11.
    jobs = [J(1, 0, 1, 10), J(2, 1, 1, 1), J(3, 2, 1, 0)]
    start, end = run_kernel(jobs, 1, 1, "none", order="sjf")
    assert start == [0, 10, 10]
    assert end == [10, 11, 10]


def test_a_zero_second_reservation_protects_no_time() -> None:
    # 3 cores, conservative. A: 2 cores 0..10. Z: 3 cores, 0 s, reserved at 10
    # but holding no time there. C: 1 core, 11 s, fits now for its whole
    # requested time (1 core free until 10, 3 after): it starts at 0 and holds a
    # core until 11, so Z finds its 3 cores at 11.
    jobs = [J(1, 0, 2, 10), J(2, 0, 3, 0), J(3, 0, 1, 11)]
    start, _ = run_kernel(jobs, 3, 1, "conservative")
    assert start == [0, 11, 0]


def test_sjf_orders_by_requested_time_then_submit_then_id() -> None:
    # 1 core busy 0..10 with A. B (wall 50), C (wall 5), D (wall 5, later id)
    # queue; SJF runs C, D, then B.
    jobs = [J(1, 0, 1, 10), J(5, 1, 1, 50), J(3, 2, 1, 5), J(4, 2, 1, 5)]
    start, _ = run_kernel(jobs, 1, 1, "none", order="sjf")
    assert start == [0, 20, 10, 15]


def test_ties_at_the_same_submit_time_break_on_job_id() -> None:
    jobs = [J(9, 0, 1, 10), J(2, 0, 1, 10), J(5, 0, 1, 10)]
    start, _ = run_kernel(jobs, 1, 1, "none")
    assert start == [20, 0, 10]


def test_priority_order_uses_the_supplied_key() -> None:
    jobs = [J(1, 0, 1, 10), J(2, 1, 1, 10), J(3, 1, 1, 10)]
    jobs[1].priority = 1.0
    jobs[2].priority = 5.0
    start, _ = run_kernel(jobs, 1, 1, "none", order="priority")
    assert start == [0, 20, 10]


@pytest.mark.parametrize("backfill", ["none", "easy", "conservative"])
def test_reference_agrees_on_hand_cases(backfill: str) -> None:
    zero = [J(1, 0, 2, 10), J(2, 0, 2, 0), J(3, 0, 2, 5), J(4, 1, 1, 0), J(5, 2, 1, 3)]
    for jobs, cores in [
        (WORKED, 4),
        ([J(1, 0, 3, 100), J(2, 0, 4, 10), J(3, 0, 1, 150)], 4),
        (zero, 2),
    ]:
        assert simulate(jobs, cores, backfill) == run_kernel(jobs, cores, 1, backfill)
