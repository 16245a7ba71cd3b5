"""A network of the user's own (a file, a module, torchvision) trains like the seed CNN: the
L2 penalty and update ratios cover its conv and linear weights, a checkpoint rebuilds it, and
a broken one is one line before anything trains."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import FACES, assert_one_line_error, babysit_here
from trainables.config import TrialConfig
from trainables.device import select_runtime
from trainables.epoch import l2_penalty
from trainables.errors import ConfigError
from trainables.networks import layer_weights
from trainables.train import train
from trainables.trial_state import TrialState, model_from

NETS = Path(__file__).parents[1] / "fixtures" / "models" / "nets.py"


def test_a_user_mlp_learns_faces_with_adamw_and_its_checkpoint_rebuilds_it(faces, tmp_path):
    config = TrialConfig(
        dataset="faces", model=f"{NETS}:mlp", arch={"hidden": 16}, optimizer="adamw", lr=3e-3,
        weight_decay=0.05, epochs=2, train_subset=1500, threads=2,
    )  # fmt: skip
    data = faces
    result = train(config, data, checkpoint_path=tmp_path / "c.pt")
    assert result.status == "completed" and result.final["val_acc"] > 0.85
    assert set(result.final) >= {"update_ratio/1", "update_ratio/3"}  # layers by module path
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert saved["model_args"]["model"] == f"{NETS}:mlp" and saved["model_args"]["arch"] == {
        "hidden": 16
    }
    rebuilt = model_from(saved["model_args"])
    rebuilt.load_state_dict(saved["model"])
    x = torch.zeros(3, 1, 24, 24)
    assert torch.equal(rebuilt.eval()(x), result.model.eval().cpu()(x))


def test_the_penalty_and_ratios_cover_conv_and_linear_weights_not_biases_or_norms(faces):
    config = TrialConfig(dataset="faces", model=f"{NETS}:small_resnet", arch={"depth": 2})
    state = TrialState.create(config, faces, select_runtime("cpu", 1))
    named = layer_weights(state.model)
    assert list(named) == ["0", "3.conv1", "3.conv2", "4.conv1", "4.conv2", "7"]
    squares = sum(float(p.square().sum()) for p in named.values())
    assert float(l2_penalty(state.model)) == pytest.approx(squares, rel=1e-5)
    norms = [m for m in state.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.weight is not w for m in norms for w in named.values())


@pytest.mark.parametrize(
    ("model", "said"),
    [
        ("nets/missing.py:mlp", "model '{root}/nets/missing.py:mlp': no such file"),
        ("no_such_package.nets:mlp", "no module 'no_such_package' to import; install it"),
        ("{fixtures}/broken_import.py:mlp", "broken_import.py failed (ModuleNotFoundError"),
        ("{fixtures}/nets.py:mpl", "has no callable 'mpl' (it has Block, mlp, not_a_module"),
        ("{fixtures}/nets.py:takes_nothing", "cannot be called with (in_channels, num_classes"),
        ("{fixtures}/nets.py:not_a_module", "returned a str, not a torch nn.Module"),
        ("{fixtures}/nets.py:wrong_shape", "gave [2, 7] for a batch of 2 images; it must give"),
        ("{fixtures}/nets.py:raises", "raised on a batch of 2 images of 1x24x24 (RuntimeError"),
        ("torchvision.resnet19", "torchvision has no classifier 'resnet19'"),
        ("seed_cnn", "is not seed-cnn, torchvision.<name>, package.module:factory or"),
    ],
)  # fmt: skip
def test_a_broken_model_is_one_line_before_anything_is_written(model, said, tmp_path, cache_dir):
    fixtures = NETS.parent
    model = model.format(fixtures=fixtures)
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        args = ["--data", FACES, "--model", model, "--epochs", "1", "--out", out]
        proc = babysit_here("train", "faces", *args, cache=cache_dir)
    assert_one_line_error(proc, said.format(fixtures=fixtures, root=tmp_path))
    assert not out.exists()


def test_seed_cnn_knobs_and_arch_do_not_mix():
    with pytest.raises(
        ConfigError, match=r"invalid batch_norm=True with model 'torchvision\.resnet18'"
    ):
        TrialConfig(model="torchvision.resnet18", batch_norm=True)
    with pytest.raises(
        ConfigError, match="for model seed-cnn: its arguments are the trial settings"
    ):
        TrialConfig(arch={"depth": 3})
    with pytest.raises(ConfigError, match="weight_decay is adamw's decoupled decay"):
        TrialConfig(weight_decay=0.01)
    relative = TrialConfig(model="nets.py:mlp")
    assert relative.model == f"{Path.cwd() / 'nets.py'}:mlp"  # trials run in folders of their own
    assert TrialConfig().replace(**{"arch.depth": 3}, model="x:y").arch == {"depth": 3}


def test_torchvision_resnet18_trains_on_grey_and_colour_images(faces, cifar10):
    for data in (faces, cifar10):
        config = TrialConfig(model="torchvision.resnet18", epochs=1, threads=2, batch_size=32)
        few = {"train": data.train.take(np.arange(96)), "val": data.val.take(np.arange(64))}
        small = data.__class__(**{**vars(data), **few})
        result = train(config.replace(optimizer="adamw", lr=1e-3), small)
        assert result.status == "completed" and math.isfinite(result.final["val_loss"])
        assert len(layer_weights(result.model)) == 21  # 20 convs and the classifier
