"""Invariants of mlcore.cascade: OHEM passes exactly the B hardest samples to stage 2, the AND
decision is never more positive than either stage, and the chosen thresholds reach their target
on the data they were chosen on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from mlcore import cascade, mean_teacher
from mlcore.config import TrainConfig
from mlcore.data import make_loader
from mlcore.mean_teacher import MeanTeacherConfig, make_teacher
from mlcore.metrics import precision_recall_at, recall_at_precision


def test_ohem_select_returns_exactly_the_b_highest_losses():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        losses = torch.rand(64, generator=generator)
        chosen = cascade.ohem_select(losses, b=16)
        assert chosen.shape == (16,)
        assert set(chosen.tolist()) == set(torch.argsort(losses, descending=True)[:16].tolist())
        assert losses[chosen].min() >= losses[~torch.isin(torch.arange(64), chosen)].max()
    with pytest.raises(ValueError, match="b must be"):
        cascade.ohem_select(torch.rand(4), b=5)


def test_and_decision_is_never_more_positive_than_either_stage():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 50))
        s1, s2 = rng.random(n), rng.random(n)
        t1, t2 = rng.random(2)
        decision = cascade.cascade_decision(s1, s2, thresholds=(t1, t2))
        assert not (decision & ~(s1 >= t1)).any()
        assert not (decision & ~(s2 >= t2)).any()
        assert decision.sum() <= min((s1 >= t1).sum(), (s2 >= t2).sum())


def _validation_scores(seed: int, n: int = 600):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    s1 = 1 / (1 + np.exp(-rng.normal(loc=2.0 * y - 1.0, scale=1.2)))
    s2 = 1 / (1 + np.exp(-rng.normal(loc=2.0 * y - 1.0, scale=1.2)))
    return y, s1, s2


@pytest.mark.parametrize("target", [0.85, 0.95])
def test_choose_thresholds_reaches_target_precision_and_beats_either_stage_alone(target):
    y, s1, s2 = _validation_scores(2)
    t1, t2 = cascade.choose_thresholds(s1, s2, y, target_precision=target)
    decision = cascade.cascade_decision(s1, s2, thresholds=(t1, t2))
    tp = (decision & (y == 1)).sum()
    assert tp / decision.sum() >= target
    cascade_recall = tp / y.sum()
    # Each stage alone is a special case (the other threshold at its minimum), so the search
    # cannot do worse than either.
    for stage in (s1, s2):
        assert cascade_recall >= recall_at_precision(y, stage, precision=target) - 1e-12


def test_choose_thresholds_reaches_target_recall_with_weights():
    y, s1, s2 = _validation_scores(3)
    weights = np.where(y == 1, 1.0, 20.0)
    t1, t2 = cascade.choose_thresholds(s1, s2, y, target_recall=0.8, sample_weight=weights)
    decision = cascade.cascade_decision(s1, s2, thresholds=(t1, t2))
    assert (decision & (y == 1)).sum() / y.sum() >= 0.8
    combined = np.where(decision, 1.0, 0.0)
    assert precision_recall_at(y, combined, threshold=1.0, sample_weight=weights).recall >= 0.8


def test_choose_thresholds_impossible_precision_gives_inf():
    y = np.array([0, 1, 0, 1])
    s = np.array([0.9, 0.8, 0.7, 0.6])
    assert cascade.choose_thresholds(s, s, y, target_precision=0.99) == (math.inf, math.inf)
    with pytest.raises(ValueError, match="exactly one"):
        cascade.choose_thresholds(s, s, y)


class _Blobs(Dataset):
    def __init__(self, seed: int, n: int) -> None:
        rng = np.random.default_rng(seed)
        self.labels = (rng.random(n) < 0.3).astype(int)
        centres = np.where(self.labels[:, None] == 1, 0.8, -0.8)
        self.x = torch.tensor(centres + rng.normal(size=(n, 6)), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.x[index], int(self.labels[index]), index


class _Recording(nn.Module):
    """A small MLP that remembers what it saw (inputs and outputs) in training mode.

    It exposes what a two-head Mean Teacher student needs: ``forward_with_features`` (the hidden
    layer is the one "feature map"), ``embedding_dim`` and ``num_classes``."""

    embedding_dim = 16
    num_classes = 2

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
        self.fc = nn.Linear(16, 2)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        hidden = self.body(x)
        logits = self.fc(hidden)
        if self.training:
            self.seen.append((x.detach().clone(), logits.detach().clone()))
        return logits, [hidden]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


def test_train_cascade_feeds_stage2_exactly_the_hardest_of_each_batch():
    dataset = _Blobs(seed=4, n=200)
    label_of = {tuple(row.tolist()): int(label) for row, label in zip(dataset.x, dataset.labels)}
    loader = make_loader(dataset, batch_size=32, shuffle=True, seed=0)
    stage1, stage2 = _Recording(0), _Recording(1)
    config = cascade.CascadeConfig(batch_a=32, hard_b=8)
    train = TrainConfig(epochs=3, batch_size=32, lr=0.05, device="cpu", seed=0)
    history = cascade.train_cascade(stage1, stage2, loader, config=config, train=train)

    assert len(history) == 3
    assert len(stage1.seen) == len(stage2.seen) == 3 * len(loader)
    for (batch, logits), (hard_inputs, _) in zip(stage1.seen, stage2.seen, strict=True):
        labels = torch.tensor([label_of[tuple(row.tolist())] for row in batch])
        losses = nn.functional.cross_entropy(logits, labels, reduction="none")
        expected = config.hard_count(len(batch))
        assert hard_inputs.shape[0] == expected
        hardest = batch[torch.argsort(losses, descending=True)[:expected]]
        assert {tuple(r.tolist()) for r in hard_inputs} == {tuple(r.tolist()) for r in hardest}
    for epoch in history:
        assert epoch["hard_mean_loss"] >= epoch["batch_mean_loss"]
        assert epoch["stage2_excluded"] == 0
    assert history[-1]["stage1_loss"] < history[0]["stage1_loss"]


def _planted_flag(seed: int) -> tuple[_Blobs, int]:
    """Blobs with one sample planted far on the positive side but labeled negative: its loss
    dwarfs every other, so plain OHEM sends it to stage 2 in every batch it is in."""
    dataset = _Blobs(seed=seed, n=96)
    planted = int(np.flatnonzero(dataset.labels == 1)[0])
    dataset.x[planted] = 6.0
    dataset.labels[planted] = 0
    return dataset, planted


@pytest.mark.parametrize("container", [set, list, np.array])
def test_flagged_sample_with_huge_loss_never_reaches_stage2(container):
    dataset, planted = _planted_flag(seed=10)
    planted_row = dataset.x[planted]

    def stage2_saw_planted(exclude) -> tuple[bool, list[dict[str, float]]]:
        loader = make_loader(dataset, batch_size=16, shuffle=True, seed=0)
        stage1, stage2 = _Recording(0), _Recording(1)
        history = cascade.train_cascade(
            stage1,
            stage2,
            loader,
            config=cascade.CascadeConfig(batch_a=16, hard_b=4),
            train=TrainConfig(epochs=3, batch_size=16, lr=0.05, device="cpu", seed=0),
            stage2_exclude=exclude,
        )
        assert any(torch.equal(row, planted_row) for x, _ in stage1.seen for row in x)
        seen = any(torch.equal(row, planted_row) for x, _ in stage2.seen for row in x)
        return seen, history

    # The control: without the exclusion, the planted label is among the hardest.
    assert stage2_saw_planted(None)[0]
    seen, history = stage2_saw_planted(container([planted]))
    assert not seen
    assert [epoch["stage2_excluded"] for epoch in history] == [1, 1, 1]


def test_batch_with_only_excluded_labels_skips_stage2():
    dataset = _Blobs(seed=11, n=32)
    loader = make_loader(dataset, batch_size=16, shuffle=False, seed=0)
    stage1, stage2 = _Recording(0), _Recording(1)
    history = cascade.train_cascade(
        stage1,
        stage2,
        loader,
        config=cascade.CascadeConfig(batch_a=16, hard_b=4),
        train=TrainConfig(epochs=1, batch_size=16, lr=0.05, device="cpu", seed=0),
        stage2_exclude=range(16),  # the whole first batch
    )
    assert len(stage1.seen) == 2 and len(stage2.seen) == 1
    assert all(row.tolist() not in dataset.x[:16].tolist() for row in stage2.seen[0][0])
    assert history[0]["stage2_excluded"] == 16
    with pytest.raises(ValueError, match="boolean mask"):
        cascade.train_cascade(
            _Recording(0),
            _Recording(1),
            loader,
            config=cascade.CascadeConfig(batch_a=16, hard_b=4),
            train=TrainConfig(epochs=1, batch_size=16, device="cpu"),
            stage2_exclude=np.zeros(32, dtype=bool),
        )


def test_cascade_predict_scores_in_dataset_order_and_applies_and():
    dataset = _Blobs(seed=5, n=120)
    loader = make_loader(dataset, batch_size=16, shuffle=True, seed=1)
    stage1, stage2 = _Recording(2), _Recording(3)
    cascade.train_cascade(
        stage1,
        stage2,
        loader,
        config=cascade.CascadeConfig(batch_a=16, hard_b=4),
        train=TrainConfig(epochs=4, batch_size=16, lr=0.05, device="cpu", seed=0),
    )
    scores = cascade.cascade_predict(stage1, stage2, loader, device="cpu", thresholds=(0.5, 0.4))
    with torch.no_grad():
        stage1.eval()
        direct = torch.softmax(stage1(dataset.x), dim=1)[:, 1].numpy()
    assert scores.stage1 == pytest.approx(direct, abs=1e-6)
    assert np.array_equal(scores.decision, (scores.stage1 >= 0.5) & (scores.stage2 >= 0.4))


def test_train_cascade_rejects_mismatched_batch_size():
    dataset = _Blobs(seed=6, n=40)
    loader = make_loader(dataset, batch_size=10, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="batch_a"):
        cascade.train_cascade(
            _Recording(0),
            _Recording(1),
            loader,
            config=cascade.CascadeConfig(batch_a=64, hard_b=16),
            train=TrainConfig(epochs=1, device="cpu"),
        )


class _TwoViewBlobs(Dataset):
    """_Blobs whose items are two independently jittered views; ``labeled=False`` hides labels."""

    def __init__(self, base: _Blobs, *, labeled: bool) -> None:
        self.base, self.labeled = base, labeled

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        x, label, _ = self.base[index]
        views = (x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x))
        return views, label if self.labeled else -1, index


@pytest.mark.parametrize("logit_distance_cost", [0.01, None])
def test_train_cascade_with_mean_teacher_updates_the_teacher_by_ema(logit_distance_cost):
    labeled = make_loader(
        _TwoViewBlobs(_Blobs(7, 64), labeled=True), batch_size=16, shuffle=True, seed=0
    )
    unlabeled = make_loader(
        _TwoViewBlobs(_Blobs(8, 96), labeled=False), batch_size=16, shuffle=True, seed=1
    )
    stage1, stage2 = _Recording(0), _Recording(1)
    teacher = make_teacher(stage1)
    history = cascade.train_cascade(
        stage1,
        stage2,
        labeled,
        config=cascade.CascadeConfig(batch_a=16, hard_b=4),
        train=TrainConfig(epochs=2, batch_size=16, lr=0.05, device="cpu", seed=0),
        unlabeled_loader=unlabeled,
        mean_teacher=MeanTeacherConfig(
            ema_decay=0.0,
            consistency_weight=5.0,
            rampup_epochs=1,
            logit_distance_cost=logit_distance_cost,
        ),
        stage1_teacher=teacher,
    )
    # decay 0 makes the teacher a copy of the student after every step.
    for a, b in zip(teacher.parameters(), stage1.parameters(), strict=True):
        assert torch.equal(a, b)
    assert all(math.isfinite(epoch["consistency_loss"]) for epoch in history)
    assert history[-1]["consistency_weight"] == pytest.approx(5.0)
    # Stage 1 saw labeled + unlabeled student views; stage 2 only the 4 hardest labeled ones.
    assert {x.shape[0] for x, _ in stage1.seen} == {32}
    assert {x.shape[0] for x, _ in stage2.seen} == {4}
    two_heads = logit_distance_cost is not None
    assert all((epoch["logit_distance"] > 0) == two_heads for epoch in history)


def test_cascade_and_train_mean_teacher_share_one_step(monkeypatch):
    # Stage 1 of the cascade must train through mean_teacher_step, the code train_mean_teacher
    # runs, not a copy of it: a second copy had drifted (issue 7).
    calls = []
    original = mean_teacher.mean_teacher_step

    def counting(*args, **kwargs):
        calls.append(kwargs["consistency_head"] is not None)
        return original(*args, **kwargs)

    monkeypatch.setattr(mean_teacher, "mean_teacher_step", counting)
    labeled = make_loader(
        _TwoViewBlobs(_Blobs(12, 48), labeled=True), batch_size=16, shuffle=True, seed=0
    )
    unlabeled = make_loader(
        _TwoViewBlobs(_Blobs(13, 48), labeled=False), batch_size=16, shuffle=True, seed=1
    )
    stage1 = _Recording(0)
    cascade.train_cascade(
        stage1,
        _Recording(1),
        labeled,
        config=cascade.CascadeConfig(batch_a=16, hard_b=4),
        train=TrainConfig(epochs=2, batch_size=16, lr=0.05, device="cpu", seed=0),
        unlabeled_loader=unlabeled,
        mean_teacher=MeanTeacherConfig(),
        stage1_teacher=make_teacher(stage1),
    )
    assert calls == [True] * (2 * len(labeled))


def test_train_cascade_mean_teacher_needs_teacher_and_unlabeled_loader():
    loader = make_loader(_Blobs(9, 32), batch_size=16, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="stage1_teacher and unlabeled_loader"):
        cascade.train_cascade(
            _Recording(0),
            _Recording(1),
            loader,
            config=cascade.CascadeConfig(batch_a=16, hard_b=4),
            train=TrainConfig(epochs=1, device="cpu"),
            mean_teacher=MeanTeacherConfig(),
        )
