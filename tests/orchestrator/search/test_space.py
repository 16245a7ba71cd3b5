import pytest
from ray import tune

from orchestrator.search.space import Param, Range
from trainables.errors import ConfigError


def test_each_kind_becomes_the_matching_tune_domain():
    cases = {
        "loguniform": ([1e-5, 1e-1], tune.search.sample.Float),
        "uniform": ([0.1, 0.9], tune.search.sample.Float),
        "int": ([16, 128], tune.search.sample.Integer),
        "logint": ([16, 128], tune.search.sample.Integer),
        "choice": (["sgd", "adam"], tune.search.sample.Categorical),
    }
    for kind, (args, domain) in cases.items():
        assert isinstance(Param.parse("x", {kind: args}).to_tune(), domain), kind
    assert Param.parse("x", {"grid": [1, 2]}).to_tune() == {"grid_search": [1, 2]}


def test_integer_bounds_are_inclusive():
    sampler = Param.parse("batch_size", {"int": [2, 3]}).to_tune()
    assert {sampler.sample() for _ in range(200)} == {2, 3}


def test_log_kinds_narrow_in_log_space_and_ints_stay_ints():
    assert Param.parse("lr", {"loguniform": [1e-6, 1e-3]}).range() == Range("lr", 1e-6, 1e-3, True)
    width = Param.parse("batch_size", {"logint": [16, 256]})
    narrowed = width.with_range(Range("batch_size", 20.4, 20.6, log=True))
    assert narrowed.values == (20, 21) and narrowed.kind == "logint"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([1e-3, 1e-1], "write one {kind: [arguments]} mapping"),
        ({"int": [1.5, 4]}, "must be integers"),
        ({"uniform": [0.1]}, "needs [low, high]"),
        ({"uniform": ["a", "b"]}, "must be numbers"),
        ({"choice": []}, "needs a non-empty list"),
    ],
)
def test_bad_parameters_are_refused(raw, message):
    with pytest.raises(ConfigError, match=r"search_space\.x") as info:
        Param.parse("x", raw)
    assert message in str(info.value)


def test_coverage_is_the_share_of_the_other_range_inside_this_one_in_its_units():
    seed = Param.parse("lr", {"loguniform": [1e-6, 1e-3]}).range()
    assert seed.coverage(1e-4, 1e-1) == pytest.approx(1 / 3)  # one of the probe's 3 decades
    assert seed.coverage(1e-5, 1e-4) == 1.0
    assert seed.coverage(1e-2, 1e-1) == 0.0
    assert Param.parse("x", {"uniform": [0, 1]}).range().coverage(0.5, 1.5) == 0.5
