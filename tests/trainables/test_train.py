import math
import re

import pytest
import torch

from trainables.checkpoint import load_checkpoint
from trainables.datasets import load_data
from trainables.epoch import COMPLETED, DIVERGED, SYNC_EVERY, lr_at
from trainables.errors import BabysitterError
from trainables.evaluation import evaluate_on_test
from trainables.train import train
from trainables.trial_state import model_from


def strip_timing(history):
    timing = {"epoch_seconds", "images_per_s"}
    return [{k: v for k, v in row.items() if k not in timing} for row in history]


@pytest.fixture(scope="module")
def small(faces_config):
    return faces_config.replace(train_subset=600, epochs=3, batch_size=32)


@pytest.fixture(scope="module")
def small_faces(small, cache_dir):
    """The faces splits with 600 training images: what ``small`` names."""
    return load_data(small, cache_dir)


def test_reports_every_epoch_with_the_agreed_metrics(small, small_faces):
    reports = []
    result = train(small, small_faces, on_epoch=reports.append)
    assert result.status == COMPLETED
    assert [r.epoch for r in reports] == [1, 2, 3]
    assert [r.status for r in reports] == ["running", "running", "completed"]
    keys = set(reports[0].metrics)
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds"} <= keys
    assert {"images_per_s", "update_ratio/conv1", "update_ratio/fc2"} <= keys
    assert 1e-5 < reports[-1].metrics["update_ratio/fc1"] < 1e-1
    assert reports[-1].metrics["train_loss"] < reports[0].metrics["train_loss"]


def test_each_epoch_says_how_noisy_its_score_is(small, small_faces):
    """The validation score carries its standard error; the initial validation loss and the
    penalty's share of the training loss tell a trial that learned from one that did not."""
    last = train(small.replace(l2=1e-2), small_faces).history[-1]
    n = len(small_faces.val)
    p = (last["val_acc"] * n + 1) / (n + 2)
    assert last["val_acc_se"] == pytest.approx(math.sqrt(p * (1 - p) / n))
    assert 0 < last["val_loss_se"] < 0.2
    assert last["val_loss_initial"] == pytest.approx(math.log(2), abs=0.1)
    assert 0 < last["train_penalty"] < last["train_loss"]
    assert last["chance_acc"] == pytest.approx(0.65, abs=0.02)  # 4,548 of 6,977 are non-faces


def test_initial_loss_is_ln_classes_and_l2_raises_it(small, small_faces):
    plain = train(small.replace(l2=0.0, epochs=1, lr=1e-9), small_faces)
    assert plain.initial_loss == pytest.approx(math.log(2), abs=0.1)
    heavy = train(small.replace(l2=1e3, epochs=1, lr=1e-9), small_faces)
    assert heavy.initial_loss > 100 * plain.initial_loss


def test_huge_learning_rate_diverges_in_the_first_epoch_without_raising(small, small_faces):
    reports = []
    result = train(small.replace(lr=1e5), small_faces, on_epoch=reports.append)
    assert result.status == DIVERGED
    assert [(r.epoch, r.status) for r in reports] == [(1, DIVERGED)]
    assert "initial" in result.reason


def test_tiny_learning_rate_barely_moves_the_loss(small, small_faces):
    result = train(small.replace(lr=1e-7), small_faces)
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    assert abs(first - last) < 0.01 * first


@pytest.mark.slow
def test_cpu_runs_are_deterministic(small, small_faces):
    a = train(small.replace(epochs=2, augment=True, dropout=0.2), small_faces)
    b = train(small.replace(epochs=2, augment=True, dropout=0.2), small_faces)
    assert strip_timing(a.history) == strip_timing(b.history)
    c = train(small.replace(epochs=2, augment=True, dropout=0.2, seed=1), small_faces)
    assert strip_timing(c.history) != strip_timing(a.history)


class Crash(Exception):
    pass


@pytest.mark.slow
def test_resume_after_a_crash_matches_an_uninterrupted_run(small, small_faces, tmp_path):
    config = small.replace(epochs=4, augment=True, dropout=0.2, lr_schedule="cosine")
    uninterrupted = train(config, small_faces, checkpoint_path=tmp_path / "a.pt")

    def crash_after_two(report):
        if report.epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        train(config, small_faces, checkpoint_path=tmp_path / "b.pt", on_epoch=crash_after_two)
    seen = []
    resumed = train(
        config, small_faces, checkpoint_path=tmp_path / "b.pt", resume=True, on_epoch=seen.append
    )
    assert [r.epoch for r in seen] == [3, 4]
    assert strip_timing(resumed.history) == strip_timing(uninterrupted.history)
    for a, b in zip(resumed.model.parameters(), uninterrupted.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_from_other_settings_is_refused(small, small_faces, tmp_path):
    trained = train(small.replace(epochs=1), small_faces, checkpoint_path=tmp_path / "c.pt")
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    rebuilt = model_from(saved["model_args"])  # the checkpoint alone rebuilds its model
    rebuilt.load_state_dict(saved["model"])
    rebuilt = rebuilt.to(memory_format=torch.channels_last)  # the trial's layout, the same kernels
    x = torch.as_tensor(small_faces.test.images[:4]).float()
    assert torch.equal(rebuilt.eval()(x), trained.model.eval()(x))
    with pytest.raises(BabysitterError, match=r"written with lr=0\.01, now lr=0\.02"):
        load_checkpoint(tmp_path / "c.pt", small.replace(epochs=1, lr=0.02).to_dict())
    assert load_checkpoint(tmp_path / "c.pt", small.replace(epochs=1, threads=1).to_dict())


def test_lr_schedules(small):
    step = small.replace(lr=1.0, lr_schedule="step", lr_step_epochs=2, lr_step_gamma=0.5)
    assert [lr_at(step, e) for e in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    cosine = small.replace(lr=1.0, lr_schedule="cosine", epochs=4)
    assert [round(lr_at(cosine, e), 4) for e in range(4)] == [1.0, 0.8536, 0.5, 0.1464]


def test_l2_penalty_skips_biases(small, small_faces):
    from trainables.epoch import l2_penalty
    from trainables.trial_state import build_model

    model = build_model(small, small_faces)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(0.0 if name.endswith("weight") else 5.0)
    assert l2_penalty(model).item() == 0.0


def test_test_report_covers_every_test_image(small, small_faces):
    result = train(small.replace(epochs=2), small_faces)
    report = evaluate_on_test(result.model, small_faces, small)
    assert sum(report.support) == len(small_faces.test) == sum(map(sum, report.confusion))
    assert report.accuracy > 0.8


READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


def test_the_loop_reads_the_device_once_per_sync_every_steps(small, small_faces, monkeypatch):
    """On a GPU each read of a device value stalls the host; the loop reads its batch losses in
    one go every SYNC_EVERY steps, plus a few reads per epoch (validation, update ratios) and
    one before training (the initial validation loss)."""
    config = small.replace(epochs=2, batch_size=16)
    steps_per_epoch = math.ceil(len(small_faces.train) / config.batch_size)
    reads = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    batches = []
    train(config, small_faces, on_batch=lambda done, total: batches.append(reads.copy()))
    monkeypatch.undo()
    assert len(batches) == 2 * steps_per_epoch == 76
    per_epoch = math.ceil(steps_per_epoch / SYNC_EVERY) + 2  # the losses, validation, ratios
    assert len(reads) <= 2 * per_epoch + 1, reads
    within_epoch = [len(b) for b in batches[:steps_per_epoch]]
    assert max(within_epoch) <= math.ceil(steps_per_epoch / SYNC_EVERY) + 1  # + initial val


def test_a_diverged_trial_stops_within_sync_every_steps(small, small_faces):
    batches = []
    result = train(small.replace(lr=1e5), small_faces, on_batch=lambda b, n: batches.append(b))
    bad = int(re.search(r"batch (\d+):", result.reason).group(1))
    assert result.status == DIVERGED and bad < SYNC_EVERY
    assert len(batches) < bad + SYNC_EVERY


def test_process_wide_random_state_does_not_touch_a_trial(small, small_faces):
    config = small.replace(epochs=2, augment=True, dropout=0.2)
    torch.manual_seed(1)
    a = train(config, small_faces)
    torch.manual_seed(2)
    torch.rand(1000)
    b = train(config, small_faces)
    assert strip_timing(a.history) == strip_timing(b.history)


def test_a_checkpoint_of_the_previous_version_resumes(small, small_faces, tmp_path):
    """Older checkpoints also held torch's process-wide RNG state; they still load."""
    config = small.replace(epochs=2)
    path = tmp_path / "old.pt"
    with pytest.raises(Crash):
        train(config, small_faces, checkpoint_path=path, on_epoch=stop_after_one)
    state = torch.load(path, weights_only=True)
    state["rng"]["torch"] = torch.get_rng_state()
    torch.save(state, path)
    resumed = train(config, small_faces, checkpoint_path=path, resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2]


def stop_after_one(report):
    if report.epoch == 1:
        raise Crash
