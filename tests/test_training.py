"""The shared step loop: checkpoint cadence, wall-clock cap, resume point."""

from __future__ import annotations

from vqbench.training import StepLoop


def test_checkpoints_at_cadence_and_at_the_end():
    saved = []
    loop = StepLoop(7, 3, lambda: saved.append(loop.step))
    assert list(loop) == list(range(7))
    assert saved == [3, 6, 7]  # every 3 steps and the last step


def test_resumes_from_the_given_step():
    loop = StepLoop(5, 10, lambda: None, start=3)
    assert list(loop) == [3, 4] and loop.step == 5


def test_wall_clock_cap_stops_and_saves():
    saved = []
    loop = StepLoop(100, 50, lambda: saved.append(loop.step), elapsed=61.0, max_minutes=1.0)
    assert list(loop) == [] and saved == [0]
