"""The pass contract and its two runners."""

import pytest

from relief_export.graph.passes import Pass, PassResult, fixed_point, run


def halve(state: int) -> PassResult[int]:
    """state // 2, modified while it changes; says why it stopped."""
    new = state // 2
    return PassResult(new, new != state, () if new != state else (f"{state} is a fixed point",))


def test_fixed_point_repeats_until_a_round_modifies_nothing():
    # 40 -> 20 -> 10 -> 5 -> 2 -> 1 -> 0 -> 0: six modifying rounds, then one that is not
    outcome = fixed_point([Pass("halve", halve)], 40)
    assert (outcome.state, outcome.rounds) == (0, 7)
    assert outcome.reasons == ["0 is a fixed point"]


def test_a_round_counts_as_modified_if_any_pass_modified():
    seen = []

    def record(state: int) -> PassResult[int]:
        seen.append(state)
        return PassResult(state, False)

    outcome = fixed_point([Pass("halve", halve), Pass("record", record)], 5)
    assert outcome.state == 0 and seen == [2, 1, 0, 0]


def test_run_applies_each_pass_once_in_order():
    add = Pass("add 3", lambda s: PassResult(s + 3, True, ("added",)))
    double = Pass("double", lambda s: PassResult(s * 2, True))
    outcome = run([add, double], 1)
    assert (outcome.state, outcome.rounds, outcome.reasons) == (8, 1, ["added"])


def test_a_pass_that_never_settles_is_an_error():
    flip = Pass("flip", lambda s: PassResult(1 - s, True))
    with pytest.raises(RuntimeError, match="flip did not settle in 5 rounds"):
        fixed_point([flip], 0, limit=5)


def test_requirements_and_guarantees_are_checked():
    positive = Pass("sqrt", lambda s: PassResult(s ** 0.5, True), requires=lambda s: s >= 0)
    assert run([positive], 16).state == 4.0
    with pytest.raises(RuntimeError, match="pass sqrt: its requirements do not hold"):
        run([positive], -1)
    broken = Pass("negate", lambda s: PassResult(-s, True), ensures=lambda s: s >= 0)
    with pytest.raises(RuntimeError, match="pass negate: its guarantees do not hold"):
        run([broken], 3)
