"""The fuzz harness (tools/fuzz.py): a sample in the default suite, the whole set (>= 1,000
cases) as a slow test. Each asserts 0 unexpected errors, 0 partial outputs, 0 changed inputs
and 0 executed payloads, and that the harness itself detects each kind of failure."""

import pytest


def _assert_clean(fuzz, outcomes, minimum):
    failures = [f"{o.case.entry} {o.case.name}: {o.verdict} {o.detail} {o.partial} "
                f"{o.changed} {o.executed}" for o in outcomes if fuzz.failed(o)]
    assert not failures, "\n".join(failures[:20])
    assert len(outcomes) >= minimum
    assert fuzz.summary(outcomes).startswith(f"{len(outcomes)} cases: ")
    assert sum(o.case.payload for o in outcomes) >= 60  # payloads in every hiding place
    # every loader's bad files, through data.load and the train command
    assert sum(o.case.entry in ("user_data_load", "cli_train_user_data") for o in outcomes) >= 40
    assert sum(o.verdict == "clear" for o in outcomes) >= 0.8 * len(outcomes)


def test_fuzz_sample(fuzz, tmp_path):
    _assert_clean(fuzz, fuzz.fuzz(tmp_path, sample=True), 400)


@pytest.mark.slow
def test_fuzz_whole(fuzz, tmp_path):
    _assert_clean(fuzz, fuzz.fuzz(tmp_path, sample=False), 1000)


def test_the_harness_detects_each_kind_of_failure(fuzz, tmp_path, monkeypatch):
    """A harness that cannot fail proves nothing: feed it entry points that misbehave."""
    marker = tmp_path / fuzz.MARKER_NAME

    def raises(folder):
        raise KeyError("boom")

    def partial(folder):
        (folder / "out.onnx").write_bytes(b"half")
        raise fuzz.ReliefError("failed after writing")

    behaviours = {"raises": raises, "partial": partial,
                  "changes": lambda folder: (folder / "model.pt").write_bytes(b"changed"),
                  "executes": lambda folder: marker.write_text("pwned")}
    monkeypatch.setattr(fuzz, "API_CASES", behaviours)
    outcomes = {name: fuzz.run_case(fuzz.Case(name, {"model.pt": b"x"}, name), tmp_path,
                                    marker, index)
                for index, name in enumerate(behaviours)}
    assert outcomes["raises"].verdict == "unexpected"
    assert outcomes["partial"].verdict == "clear" and outcomes["partial"].partial == ["out.onnx"]
    assert outcomes["changes"].changed == ["model.pt"]
    assert outcomes["executes"].executed
    assert fuzz.summary(list(outcomes.values())) == (
        "4 cases: 1 clear errors, 1 unexpected, 1 partial outputs, 1 inputs changed, "
        "1 code executed")
