import copy
import math

import pytest
import torch
from torch import nn

from mlcore.augment import strong_transform, weak_transform
from mlcore.backbones import build_backbone
from mlcore.config import BackboneConfig, TrainConfig
from mlcore.data import ArrayImageDataset, TwoViews, make_loader
from mlcore.mean_teacher import (
    MeanTeacherConfig,
    ema_update,
    logit_distance,
    make_consistency_head,
    make_teacher,
    mean_teacher_step,
    sigmoid_rampup,
    softmax_mse_consistency,
    train_mean_teacher,
)

from .conftest import make_square_images

TINY = BackboneConfig(name="small_cnn", input_size=16, width_mult=0.25)


def _student() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone(TINY)


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ema_with_decay_zero_copies_the_student_parameters_and_leaves_buffers_alone():
    student = _student()
    teacher = make_teacher(student)
    torch.manual_seed(1)
    for parameter in student.parameters():
        parameter.data.add_(torch.randn_like(parameter))
    student(torch.randn(4, 3, 16, 16))  # moves BatchNorm running statistics and counters
    teacher_buffers = {k: v.clone() for k, v in teacher.named_buffers()}
    assert not _states_equal(teacher, student)
    ema_update(teacher, student, decay=0.0)
    for (name, t), s in zip(teacher.named_parameters(), student.parameters(), strict=True):
        assert torch.equal(t, s), name
    # The teacher's running statistics are its own (module docstring).
    assert all(torch.equal(v, teacher_buffers[k]) for k, v in teacher.named_buffers())
    assert not all(
        torch.equal(v, dict(student.named_buffers())[k]) for k, v in teacher_buffers.items()
    )


def test_ema_mixes_by_the_decay_and_leaves_the_student_alone():
    student = _student()
    teacher = make_teacher(student)
    for parameter in teacher.parameters():
        parameter.data.zero_()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    ema_update(teacher, student, decay=0.75)
    for (name, t), s in zip(teacher.named_parameters(), student.parameters()):
        assert torch.allclose(t, 0.25 * s), name
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    with pytest.raises(ValueError, match="decay"):
        ema_update(teacher, student, decay=1.5)


def test_make_teacher_is_a_detached_copy():
    student = _student()
    teacher = make_teacher(student)
    assert _states_equal(teacher, student)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert next(teacher.parameters()).data_ptr() != next(student.parameters()).data_ptr()


def test_sigmoid_rampup_shape():
    assert sigmoid_rampup(0, 5) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 5) == 1.0 and sigmoid_rampup(50, 5) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0
    values = [sigmoid_rampup(e / 2, 5) for e in range(11)]
    assert values == sorted(values) and len(set(values)) == 11


def test_consistency_is_zero_for_equal_outputs_and_trains_only_the_student():
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    assert softmax_mse_consistency(logits, logits.clone()) == 0
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3, requires_grad=True)
    cost = softmax_mse_consistency(student, teacher)
    expected = ((student.softmax(1) - teacher.softmax(1)) ** 2).sum(1).mean()
    assert cost > 0 and torch.allclose(cost, expected)
    cost.backward()
    assert student.grad is not None and teacher.grad is None
    with pytest.raises(ValueError, match="shapes differ"):
        softmax_mse_consistency(torch.zeros(2, 3), torch.zeros(2, 4))


def _two_view_loader(images, labels, *, seed: int):
    dataset = ArrayImageDataset(
        images, labels, transform=TwoViews(strong_transform(16), weak_transform(16))
    )
    return make_loader(dataset, batch_size=8, shuffle=True, seed=seed, drop_last=True)


def _batches():
    images, labels = make_square_images(16)
    labeled = next(iter(_two_view_loader(images, labels, seed=0)))
    unlabeled = next(iter(_two_view_loader(images, labels * 0 - 1, seed=1)))
    return labeled, unlabeled


def test_one_step_uses_labels_only_where_present():
    labeled, unlabeled = _batches()
    student = _student()
    teacher = make_teacher(student)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    step = mean_teacher_step(
        student,
        teacher,
        optimizer,
        labeled,
        unlabeled,
        consistency_weight=1.0,
        ema_decay=0.5,
        device="cpu",
    )
    assert step.class_loss > 0 and step.consistency_loss >= 0
    assert step.loss == pytest.approx(step.class_loss + step.consistency_loss)
    assert step.logit_distance == 0.0
    # The labeled items come back for OHEM: their student views, labels and per-sample losses.
    assert step.inputs.shape == labeled[0][0].shape
    assert torch.equal(step.labels, labeled[1]) and torch.equal(step.indices, labeled[2])
    assert step.class_losses.shape == (8,)
    assert float(step.class_losses.mean()) == pytest.approx(step.class_loss, rel=1e-5)
    # An all-unlabeled "labeled" batch contributes only consistency.
    only_consistency = mean_teacher_step(
        student,
        teacher,
        optimizer,
        unlabeled,
        unlabeled,
        consistency_weight=1.0,
        ema_decay=0.5,
        device="cpu",
    )
    assert only_consistency.class_loss == 0.0 and only_consistency.class_losses.shape == (0,)


def _consistency_only_step(*, two_heads: bool):
    """One plain-SGD step with nothing labeled and no logit distance: only the consistency cost
    moves the student. Returns (class head weights before, after, consistency head or None)."""
    _, unlabeled = _batches()
    student = _student()
    teacher = make_teacher(student)
    # A teacher that disagrees with the student, so the consistency cost has a gradient.
    for parameter in teacher.parameters():
        parameter.add_(0.5 * torch.randn_like(parameter))
    head = make_consistency_head(student) if two_heads else None
    trained = list(student.parameters()) + (list(head.parameters()) if head else [])
    optimizer = torch.optim.SGD(trained, lr=1.0)
    before = student.fc.weight.detach().clone()
    head_before = head.weight.detach().clone() if head else None
    step = mean_teacher_step(
        student,
        teacher,
        optimizer,
        unlabeled,
        unlabeled,
        consistency_weight=1.0,
        ema_decay=0.5,
        device="cpu",
        consistency_head=head,
        logit_distance_cost=0.0,
    )
    assert step.consistency_loss > 0
    return before, student.fc.weight.detach(), head, head_before


def test_two_heads_keep_the_consistency_cost_off_the_class_head():
    # The failure: with one head the consistency cost flattens the classifying output.
    before, after, head, head_before = _consistency_only_step(two_heads=True)
    assert torch.equal(before, after)
    assert not torch.equal(head.weight.detach(), head_before)
    before, after, _, _ = _consistency_only_step(two_heads=False)
    assert not torch.equal(before, after)


def test_two_head_loss_adds_the_weighted_logit_distance():
    labeled, unlabeled = _batches()
    student = _student()
    teacher = make_teacher(student)
    head = make_consistency_head(student)
    optimizer = torch.optim.SGD([*student.parameters(), *head.parameters()], lr=0.01)
    step = mean_teacher_step(
        student,
        teacher,
        optimizer,
        labeled,
        unlabeled,
        consistency_weight=2.0,
        ema_decay=0.5,
        device="cpu",
        consistency_head=head,
        logit_distance_cost=0.5,
    )
    assert step.logit_distance > 0
    assert step.loss == pytest.approx(
        step.class_loss + 2.0 * step.consistency_loss + 0.5 * step.logit_distance, rel=1e-5
    )
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.allclose(logit_distance(a, b), ((a - b) ** 2).mean())


def _batchnorm_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: buffer.clone()
        for name, buffer in module.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    }


def test_teacher_batchnorm_statistics_are_its_own_train_mode_statistics():
    # The teacher normalises with batch statistics (train mode, as the paper's teacher) and its
    # running statistics move with its own forward pass only: not averaged from the student's.
    labeled, unlabeled = _batches()
    student = _student()
    teacher = make_teacher(student)
    # Different statistics on the student's side, so a mix-up cannot pass by coincidence.
    student(torch.randn(8, 3, 16, 16) * 3 + 1)
    expected = copy.deepcopy(teacher).train()
    with torch.no_grad():
        expected_logits = expected(torch.cat([labeled[0][1], unlabeled[0][1]]))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    mean_teacher_step(
        student,
        teacher,
        optimizer,
        labeled,
        unlabeled,
        consistency_weight=1.0,
        ema_decay=0.75,
        device="cpu",
    )
    teacher_stats, expected_stats = _batchnorm_buffers(teacher), _batchnorm_buffers(expected)
    student_stats = _batchnorm_buffers(student)
    assert teacher_stats
    for name, value in teacher_stats.items():
        assert torch.allclose(value, expected_stats[name], atol=1e-6), name
        assert not torch.allclose(value, student_stats[name], atol=1e-3), name
    assert teacher.training and torch.isfinite(expected_logits).all()


def test_config_schedules_and_validation():
    config = MeanTeacherConfig(
        ema_decay=0.99, ema_decay_after_rampup=0.999, consistency_weight=10.0, rampup_epochs=2
    )
    assert config.two_heads
    assert config.consistency_weight_at(2.0) == pytest.approx(10.0)
    assert config.consistency_weight_at(0.0) == pytest.approx(10.0 * math.exp(-5))
    assert config.ema_decay_at(0.5, step=0) == 0.0  # the first step copies the student
    assert config.ema_decay_at(0.5, step=10_000) == 0.99
    assert config.ema_decay_at(2.5, step=10_000) == 0.999
    assert not MeanTeacherConfig(logit_distance_cost=None).two_heads
    with pytest.raises(ValueError, match="logit_distance_cost"):
        MeanTeacherConfig(logit_distance_cost=-1.0)
    with pytest.raises(ValueError, match="forward_with_features"):
        make_consistency_head(nn.Linear(3, 2))


@pytest.mark.parametrize("logit_distance_cost", [0.01, None])
def test_mean_teacher_trains_on_a_toy_problem_and_the_teacher_lags_the_student(
    logit_distance_cost,
):
    images, labels = make_square_images(96, seed=3)
    labeled_loader = _two_view_loader(images[:24], labels[:24], seed=0)
    unlabeled_loader = _two_view_loader(images[24:], None, seed=1)
    student = _student()
    teacher = make_teacher(student)
    seen = []
    history = train_mean_teacher(
        student,
        teacher,
        labeled_loader,
        unlabeled_loader,
        config=MeanTeacherConfig(
            ema_decay=0.9,
            consistency_weight=5.0,
            rampup_epochs=2,
            logit_distance_cost=logit_distance_cost,
        ),
        train=TrainConfig(epochs=4, lr=0.05, device="cpu"),
        on_epoch=lambda epoch, metrics: seen.append(metrics["consistency_weight"]),
    )
    assert len(history) == 4 and len(seen) == 4
    assert seen == sorted(seen) and seen[-1] == pytest.approx(5.0)
    assert history[-1]["class_loss"] < history[0]["class_loss"]
    assert all(math.isfinite(row["consistency_loss"]) for row in history)
    assert not _states_equal(teacher, student)
    # The teacher is an average of past students: close to the student, not a stale copy.
    initial = _student()
    distance_to_student = sum(
        (t - s).norm() for t, s in zip(teacher.parameters(), student.parameters())
    )
    distance_to_start = sum(
        (t - s).norm() for t, s in zip(teacher.parameters(), initial.parameters())
    )
    assert distance_to_student < distance_to_start


def test_two_heads_on_a_head_only_student_over_cached_trunk_outputs():
    # The pipeline's frozen-trunk presets train backbones.HeadOnly on cached trunk outputs:
    # the consistency head sits on its pooled last map and the trunk never moves.
    from mlcore.backbones import HeadOnly

    torch.manual_seed(0)
    classifier = build_backbone(
        BackboneConfig(name="small_cnn", input_size=16, width_mult=0.25, frozen_stages=1)
    )
    student = HeadOnly(classifier)
    teacher = make_teacher(student)
    head = make_consistency_head(student)
    assert head.in_features == student.embedding_dim and head.out_features == 2
    trunk_before = {k: v.clone() for k, v in classifier.stages[0].state_dict().items()}
    trunk = classifier.forward_trunk(torch.randn(16, 3, 16, 16))
    labeled = ((trunk[:8], trunk[:8] + 0.1), torch.tensor([0, 1] * 4), torch.arange(8))
    unlabeled = ((trunk[8:], trunk[8:] - 0.1), torch.full((8,), -1), torch.arange(8, 16))
    trained = [p for p in [*student.parameters(), *head.parameters()] if p.requires_grad]
    step = mean_teacher_step(
        student,
        teacher,
        torch.optim.SGD(trained, lr=0.1),
        labeled,
        unlabeled,
        consistency_weight=1.0,
        ema_decay=0.5,
        device="cpu",
        consistency_head=head,
        logit_distance_cost=0.01,
    )
    assert step.logit_distance > 0 and math.isfinite(step.loss)
    after = classifier.stages[0].state_dict()
    assert all(torch.equal(after[k], v) for k, v in trunk_before.items())
