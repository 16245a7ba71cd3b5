import pytest
import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.model import Dropout, SeedCNN, parameter_count


def test_seed_cnn_has_the_reports_357k_parameters_on_cifar10():
    model = SeedCNN(3, 10, (32, 32))
    assert parameter_count(model) == 356_810
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(("channels", "size"), [(1, (24, 24)), (3, (40, 56)), (4, (9, 8))])
def test_any_input_size_and_channel_count(channels, size):
    model = SeedCNN(channels, 2, size)
    assert model(torch.zeros(3, channels, *size)).shape == (3, 2)


def test_too_small_images_are_refused():
    with pytest.raises(ConfigError, match="each side must be >= 8 pixels"):
        SeedCNN(3, 2, (6, 32))


def test_switches_change_the_network():
    plain = SeedCNN(3, 10, (32, 32))
    bn = SeedCNN(3, 10, (32, 32), batch_norm=True, dropout=0.5, width=0.5)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 3
    assert [m.p for m in bn.modules() if isinstance(m, Dropout)] == [0.5, 0.5]
    assert bn.layer_weights()["conv1"].shape[0] == 16
    assert list(plain.layer_weights()) == ["conv1", "conv2", "conv3", "fc1", "fc2"]


def test_he_init_has_the_relu_gain():
    torch.manual_seed(0)
    he = SeedCNN(3, 10, (32, 32), he_init=True).layer_weights()["fc1"]
    glorot = SeedCNN(3, 10, (32, 32)).layer_weights()["fc1"]
    assert he.std().item() == pytest.approx((2 / 2048) ** 0.5, rel=0.05)
    assert glorot.std().item() == pytest.approx((2 / (2048 + 128)) ** 0.5, rel=0.05)
