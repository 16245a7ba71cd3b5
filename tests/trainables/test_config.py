import pytest

from trainables.config import TrialConfig
from trainables.errors import ConfigError


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0.0}, "invalid lr=0.0: must be > 0"),
        ({"lr": -1e-3}, "invalid lr=-0.001: must be > 0"),
        ({"lr": float("nan")}, "invalid lr=nan: must be > 0"),
        ({"batch_size": 0}, "invalid batch_size=0: must be an integer >= 1"),
        ({"epochs": -2}, "invalid epochs=-2: must be an integer >= 1"),
        ({"l2": -1.0}, "invalid l2=-1.0: must be >= 0"),
        ({"momentum": 1.0}, "invalid momentum=1.0: must be in [0, 1)"),
        ({"optimizer": "rmsprop"}, "invalid optimizer='rmsprop': must be one of sgd, adam"),
        ({"dataset": "mnist"}, "invalid dataset='mnist': must be one of cifar10, faces"),
        ({"val_fraction": 1.0}, "invalid val_fraction=1.0: must be in (0, 1)"),
        ({"train_subset": 1}, "invalid train_subset=1: must be an integer >= 2"),
        ({"nesterov": True, "momentum": 0.0}, "Nesterov needs optimizer sgd and momentum > 0"),
    ],
)
def test_invalid_settings_name_the_field_the_value_and_the_rule(changes, message):
    with pytest.raises(ConfigError) as info:
        TrialConfig(**changes)
    assert message in str(info.value)


def test_replace_validates_and_rejects_unknown_settings():
    config = TrialConfig()
    assert config.replace(lr=0.1).lr == 0.1
    with pytest.raises(ConfigError, match="invalid lr=0"):
        config.replace(lr=0)
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'"):
        config.replace(learning_rate=0.1)
