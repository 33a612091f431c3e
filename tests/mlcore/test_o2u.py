"""Invariants of mlcore.o2u: the cyclic schedule's shape, the ranking arithmetic, and that the
cyclic phase ranks planted mislabeled samples above clean ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from mlcore import o2u


def test_cyclic_lr_is_linear_high_to_low_within_a_cycle_and_jumps_back():
    rates = [o2u.cyclic_lr(e, cycle_length=5, lr_max=0.05, lr_min=0.001) for e in range(15)]
    for cycle in range(3):
        within = rates[cycle * 5 : cycle * 5 + 5]
        assert within[0] == pytest.approx(0.05)
        assert within[-1] == pytest.approx(0.001)
        steps = np.diff(within)
        assert np.allclose(steps, steps[0]) and steps[0] < 0
    assert rates[5] == pytest.approx(0.05) and rates[10] == pytest.approx(0.05)
    assert o2u.cyclic_lr(1.5, cycle_length=5, lr_max=0.05, lr_min=0.001) == pytest.approx(
        (rates[1] + rates[2]) / 2
    )


def test_rank_by_noise_normalises_each_epoch_and_ranks_descending():
    losses = np.array([[1.0, 2.0, 3.0, 2.0], [10.0, 10.0, 40.0, 20.0]])
    ranking = o2u.rank_by_noise(losses, fraction=0.5)
    # epoch 0 / mean 2 -> [.5, 1, 1.5, 1]; epoch 1 / mean 20 -> [.5, .5, 2, 1]
    assert ranking.scores == pytest.approx([0.5, 0.75, 1.75, 1.0])
    assert ranking.order.tolist() == [2, 3, 1, 0]
    assert ranking.suspects.tolist() == [2, 3]


def test_rank_by_noise_rejects_bad_shapes_and_missing_losses():
    with pytest.raises(ValueError, match="n_epochs, n_samples"):
        o2u.rank_by_noise(np.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        o2u.rank_by_noise(np.array([[1.0, np.nan]]))


class _Blobs(Dataset):
    """Two separable Gaussian blobs in 8-D with a share of labels flipped."""

    def __init__(self, seed: int, n: int, flip_fraction: float) -> None:
        rng = np.random.default_rng(seed)
        self.true_labels = rng.integers(0, 2, size=n)
        centres = np.where(self.true_labels[:, None] == 1, 1.5, -1.5)
        self.x = torch.tensor(centres + rng.normal(size=(n, 8)), dtype=torch.float32)
        self.flipped = rng.choice(n, size=int(flip_fraction * n), replace=False)
        self.labels = self.true_labels.copy()
        self.labels[self.flipped] = 1 - self.labels[self.flipped]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.x[index], int(self.labels[index]), index


def _pretrained_mlp(dataset: _Blobs, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    labels = torch.as_tensor(dataset.labels)
    for _ in range(30):  # full-batch pre-training, not long enough to memorise the flips
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(dataset.x), labels).backward()
        optimizer.step()
    return model


def test_o2u_ranks_planted_mislabeled_samples_above_clean_ones():
    dataset = _Blobs(seed=0, n=400, flip_fraction=0.1)
    model = _pretrained_mlp(dataset, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    config = o2u.O2UConfig(
        cycle_length=3,
        n_cycles=2,
        lr_max=0.1,
        lr_min=0.005,
        fraction=0.1,
        batch_size=32,
        device="cpu",
        seed=0,
    )
    seen_epochs: list[tuple[int, float]] = []
    ranking = o2u.detect_noise(
        model, dataset, config=config, on_epoch=lambda e, lr: seen_epochs.append((e, lr))
    )
    flipped = set(dataset.flipped.tolist())
    precision = len(flipped & set(ranking.suspects.tolist())) / len(ranking.suspects)
    assert len(ranking.suspects) == 40
    assert precision >= 0.9
    assert (
        ranking.scores[list(flipped)].mean() > 2 * np.delete(ranking.scores, list(flipped)).mean()
    )
    assert [e for e, _ in seen_epochs] == list(range(6))
    assert seen_epochs[0][1] == pytest.approx(0.1) and seen_epochs[3][1] == pytest.approx(0.1)
    # The caller's pre-trained model is left as it was.
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_record_cyclic_losses_shape_and_rejects_unlabeled():
    dataset = _Blobs(seed=1, n=40, flip_fraction=0.0)
    model = _pretrained_mlp(dataset, seed=1)
    config = o2u.O2UConfig(cycle_length=2, n_cycles=1, batch_size=16, device="cpu")
    losses = o2u.record_cyclic_losses(model, dataset, config=config)
    assert losses.shape == (2, 40)
    assert np.isfinite(losses).all() and (losses >= 0).all()
    dataset.labels[3] = -1
    with pytest.raises(ValueError, match="unlabeled"):
        o2u.record_cyclic_losses(model, dataset, config=config)


def test_rank_by_loss_is_a_one_epoch_ranking_scaled_to_the_mean():
    ranking = o2u.rank_by_loss(np.array([0.2, 1.0, 0.2, 0.6]), fraction=0.25)
    assert ranking.scores == pytest.approx([0.4, 2.0, 0.4, 1.2])
    assert ranking.order.tolist() == [1, 3, 0, 2]  # ties by index
    assert ranking.suspects.tolist() == [1]
    with pytest.raises(ValueError, match="n_samples"):
        o2u.rank_by_loss(np.ones((2, 3)))


def _fresh_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))


@pytest.mark.parametrize("method", ["o2u", "loss"])
def test_find_label_noise_pretrains_then_ranks_planted_flips_first(method):
    dataset = _Blobs(seed=2, n=400, flip_fraction=0.1)
    config = o2u.O2UConfig(
        pretrain_epochs=3,
        cycle_length=3,
        n_cycles=1,
        lr_max=0.1,
        lr_min=0.005,
        fraction=0.1,
        batch_size=32,
        device="cpu",
        seed=0,
    )
    model = _fresh_mlp(0)
    before = [p.detach().clone() for p in model.parameters()]
    progress: list[tuple[str, int, int]] = []
    found = o2u.find_label_noise(
        model, dataset, config=config, method=method, on_epoch=lambda *a: progress.append(a)
    )
    # Pre-training trained the caller's model in place.
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    cyclic = 3 if method == "o2u" else 0
    assert (found.method, found.pretrain_epochs, found.cyclic_epochs) == (method, 3, cyclic)
    assert found.function == "mlcore.o2u.find_label_noise"
    expected = [("pre-training", e, 3 + cyclic) for e in (1, 2, 3)]
    expected += [("cyclic learning rate", 3 + e, 3 + cyclic) for e in range(1, cyclic + 1)]
    assert progress == expected
    flipped = set(dataset.flipped.tolist())
    assert len(found.ranking.suspects) == 40
    precision = len(flipped & set(found.ranking.suspects.tolist())) / 40
    assert precision >= 0.8, precision
    assert found.ranking.scores.mean() == pytest.approx(1.0)


def test_find_label_noise_refuses_unknown_methods_and_unlabeled_samples():
    dataset = _Blobs(seed=3, n=20, flip_fraction=0.0)
    config = o2u.O2UConfig(pretrain_epochs=1, cycle_length=1, n_cycles=1, device="cpu")
    with pytest.raises(ValueError, match="method"):
        o2u.find_label_noise(_fresh_mlp(0), dataset, config=config, method="vote")
    dataset.labels[0] = -1
    with pytest.raises(ValueError, match="label for every sample"):
        o2u.find_label_noise(
            _fresh_mlp(0),
            dataset,
            config=o2u.O2UConfig(pretrain_epochs=0, device="cpu"),
            method="loss",
        )
    with pytest.raises(ValueError, match="pretrain_epochs"):
        o2u.O2UConfig(pretrain_epochs=-1)


def test_training_pass_losses_use_batch_statistics_without_dropout_and_leave_the_model_alone():
    dataset = _Blobs(seed=4, n=64, flip_fraction=0.0)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2)
    )
    model.eval()
    running_mean = model[1].running_mean.clone()
    config = o2u.O2UConfig(batch_size=16, device="cpu", seed=3)
    first = o2u.training_pass_losses(model, dataset, config=config)
    again = o2u.training_pass_losses(model, dataset, config=config)
    assert first.shape == (64,) and np.isfinite(first).all()
    assert np.array_equal(first, again)  # dropout off: the same batches give the same losses
    assert torch.equal(model[1].running_mean, running_mean) and not model.training
    with torch.no_grad():  # evaluation mode (running statistics) gives other losses
        eval_losses = nn.functional.cross_entropy(
            model(dataset.x), torch.as_tensor(dataset.labels), reduction="none"
        ).numpy()
    assert not np.allclose(first, eval_losses, atol=1e-3)
