"""Training gives its CPU to any task that wants one: service.worker.YieldToWaiting, and the
test it asks (service.tuning.cpu_wanted)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from harness.servers import spinning
from service.tuning import cpu_wanted
from service.worker import TimeLimitError, YieldToWaiting


class Machine:
    """A clock that the naps move, and whether a CPU is wanted read off a script, one a look
    (1: wanted, 0: not; not wanted once the script ends)."""

    def __init__(self, wants: list[int]) -> None:
        self.wants = wants
        self.looks = 0
        self.now = 100.0
        self.naps: list[float] = []

    def wanted(self) -> bool:
        self.looks += 1
        return bool(self.wants.pop(0)) if self.wants else False

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds


def yielding(
    machine: Machine, stop: bool = False, naps: tuple[float, float] = (0.001, 0.008)
) -> YieldToWaiting:
    return YieldToWaiting(
        machine.wanted,
        lambda: stop,
        check_seconds=0.0005,
        naps_seconds=naps,
        min_share=0.05,
        clock=machine.clock,
        sleep=machine.sleep,
    )


def train_for(machine: Machine, step: YieldToWaiting, seconds: float) -> None:
    """Steps of 0.1 ms of training, each followed by the hook, for ``seconds``."""
    end = machine.now + seconds
    while machine.now < end:
        machine.now += 0.0001
        step()


def test_naps_double_while_a_cpu_stays_wanted() -> None:
    machine = Machine([1] * 6)
    step = yielding(machine)
    train_for(machine, step, 0.1)
    assert machine.naps == [0.001, 0.002, 0.004, 0.008, 0.008, 0.008]
    assert step.yielded_seconds == pytest.approx(sum(machine.naps))


def test_no_nap_while_no_task_wants_a_cpu() -> None:
    machine = Machine([0] * 1000)
    step = yielding(machine)
    train_for(machine, step, 0.01)
    assert machine.naps == []
    assert step.yielded_seconds == 0.0
    assert 19 <= machine.looks <= 21  # one look every 0.5 ms of training, not one a step


def test_training_keeps_its_share_on_a_machine_busy_for_good() -> None:
    """A CPU wanted at every look: after each nap of 100 ms, 5.3 ms of training, so a job
    still ends; 5% of the time, not less."""
    machine = Machine([1] * 10**6)
    step = yielding(machine, naps=(0.001, 0.1))
    began = machine.now
    train_for(machine, step, 10.0)
    elapsed = machine.now - began
    trained = elapsed - step.yielded_seconds
    assert 0.049 <= trained / elapsed <= 0.06, (trained, elapsed)  # the last nap ends it
    assert set(machine.naps[-10:]) == {0.1}


def test_naps_shrink_again_as_it_trains() -> None:
    """Four busy looks take the nap to its longest (8 ms); three free ones halve it back to
    1 ms, the next busy look's."""
    machine = Machine([1, 1, 1, 1, 0, 0, 0, 1])
    step = yielding(machine)
    train_for(machine, step, 0.1)
    assert machine.naps == [0.001, 0.002, 0.004, 0.008, 0.001]


def test_stop_ends_the_wait() -> None:
    """A cancel or the time limit: training goes on to the epoch's end, where it stops."""
    machine = Machine([1] * 100)
    step = yielding(machine, stop=True)
    train_for(machine, step, 0.01)
    assert machine.naps == []


def test_the_time_limit_message_says_how_long_training_waited() -> None:
    assert "12.5 s of it waiting for busy CPUs" in str(TimeLimitError(3, 70.0, 60.0, 12.5))
    assert "waiting" not in str(TimeLimitError(3, 70.0, 60.0, 0.0))


@pytest.mark.skipif(sys.platform != "linux", reason="getrusage's RUSAGE_THREAD is Linux's")
def test_a_cpu_is_wanted_while_more_tasks_spin_than_there_are_cpus() -> None:
    """Back to back, most looks find nothing (one may catch a passing task); with a spinner
    for every CPU beside it, this thread is preempted or one of them waits at every look."""
    wanted = cpu_wanted()
    assert wanted is not None
    assert not all(wanted() for _ in range(1000))
    with spinning(os.cpu_count() or 1):
        looks = []
        for _ in range(20):
            deadline = time.perf_counter() + 0.002
            while time.perf_counter() < deadline:  # busy, as training is
                pass
            looks.append(wanted())
    assert all(looks), looks
