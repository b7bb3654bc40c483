"""Property tests of people sync (no broker: ``helpers.household``'s simulated one): random changes on three devices,
with random disconnections and messages delivered in any order, end with identical galleries, nobody lost
and nobody twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.household import SimHousehold, check_converged


def run(household: SimHousehold, actions: list[tuple[int, int, int]]) -> int:
    """Each action: (device, what, amount): 0-5 a change, 6 disconnect (or, one time in three, a restart of
    the daemon from its state file), 7 reconnect, 8-9 deliver some messages; the clock moves on a little each
    time. Returns the number of changes made."""
    changes = 0
    for index, what, amount in actions:
        device = household.devices[index % len(household.devices)]
        household.now_ms += 37 * (amount + 1)
        if what <= 5:
            household.change(device)
            household.step(device)
            changes += 1
        elif what == 6:
            if amount % 3 == 0:
                household.restart(device)
            else:
                household.disconnect(device)
        elif what == 7:
            household.connect(device)
        else:
            household.deliver(device, amount)
            household.step(device)
    return changes


ACTIONS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9), st.integers(0, 6)), min_size=1, max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_random_changes_converge(actions: list[tuple[int, int, int]], tmp_path_factory: pytest.TempPathFactory
                                 ) -> None:
    household = SimHousehold(tmp_path_factory.mktemp("household"), seed=len(actions))
    for device in household.devices:
        household.connect(device)
    run(household, actions)
    household.settle()
    check_converged(household)


def test_a_thousand_changes_with_disconnections(tmp_path: Path) -> None:
    """The issue's figure: 1,000 random changes on 3 devices that go offline and come back at random, with
    messages reordered: nobody lost or duplicated, every gallery the same."""
    household = SimHousehold(tmp_path, seed=31)
    for device in household.devices:
        household.connect(device)
    rng = household.random
    changes = 0
    while changes < 1000:
        actions = [(rng.randrange(3), rng.choice([0, 0, 0, 1, 2, 3, 6, 7, 7, 8, 9]), rng.randrange(7))
                   for _ in range(20)]
        changes += run(household, actions)
    household.settle()
    gallery = check_converged(household)
    assert len(gallery) >= 3 and gallery.negatives  # the changes left people and evidence behind
