"""Mean Teacher semi-supervised training (Tarvainen & Valpola, NeurIPS 2017).

The student learns cross-entropy on labeled images plus a consistency cost, the squared distance
between its softmax and the teacher's, on labeled and unlabeled images alike; the teacher's
weights are the exponential moving average (EMA) of the student's, and the two see independently
augmented views of each image (``data.TwoViews``; the student gets ``augment.strong_transform``,
the teacher ``augment.weak_transform``). The consistency weight ramps up with a sigmoid schedule
``exp(-5 (1 - t)^2)``, and the EMA decay starts low (``min(decay, 1 - 1/(step + 1))``, the paper's
code) so the teacher is not stuck near its random initialisation.

Two heads (the paper's §3.2 and appendix B.1, "logit_distance_cost"): with
``MeanTeacherConfig.logit_distance_cost`` set (the default, 0.01 as in the paper), the student
gets a second linear head on its pooled embedding, created by the training function and thrown
away after it. The consistency cost acts on that head's softmax; cross-entropy acts on the class
head only; a small mean squared distance between the two heads' logits ties them together.
Without it (``logit_distance_cost=None``) the consistency cost acts on the class head itself and
the student can satisfy it by flattening its predictions: on Fashion-MNIST with 5% labels that
one-head variant lost to plain supervised training (docs/benchmarks.md, section 4). The two-head
student must expose ``forward_with_features(x) -> (logits, [feature maps])``, ``embedding_dim``
(channels of the last map, whose spatial mean is the embedding) and ``num_classes`` or
``config.num_classes`` (``backbones.Classifier`` and ``backbones.HeadOnly`` do). The teacher is a
copy of the student alone: its class head is the one deployed.

Teacher BatchNorm (a decision, the paper's code's): the teacher's forward pass during training
runs in train mode, normalising with the statistics of its own batch, and its running statistics
are its own, moved only by those forward passes; :func:`ema_update` averages parameters and never
touches buffers. An averaged network's activations are not the average of the students'
activations, so running statistics averaged from the student's do not fit the teacher's
weights: in a one-off check on bench/semisup.py's data (3,000 labels, 3 epochs, seed 0, 2,000
validation images) averaged statistics gave the two-head teacher a validation error of 0.82,
its own statistics 0.50 (docs/benchmarks.md, section 4).

Other departures: ``softmax_mse_consistency`` sums the squared differences over classes and
averages over the batch (the paper's code divides by the number of classes too, so its weight
100 on CIFAR-10 equals 10 here); the logit distance is the paper's (mean over batch and classes),
so its 0.01 carries over; one epoch is one pass over the unlabeled loader, with the labeled
loader cycled, unless ``steps_per_epoch`` says otherwise.

:class:`MeanTeacherLoop` is the one implementation of a student step with its schedules: both
:func:`train_mean_teacher` and stage 1 of ``mlcore.cascade.train_cascade`` drive it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mlcore.config import TrainConfig, resolve_device, seed_everything
from mlcore.train import EpochCallback, call_on_epoch, evaluate, make_optimizer, make_scheduler

__all__ = [
    "MeanTeacherConfig",
    "MeanTeacherLoop",
    "MeanTeacherStep",
    "ema_update",
    "logit_distance",
    "make_consistency_head",
    "make_teacher",
    "mean_teacher_step",
    "sigmoid_rampup",
    "softmax_mse_consistency",
    "train_mean_teacher",
]

# The paper's weight of the distance between the class and consistency logits (appendix B.1).
PAPER_LOGIT_DISTANCE_COST = 0.01


@dataclass(frozen=True)
class MeanTeacherConfig:
    """ema_decay: the teacher's EMA decay (0.99 in the paper's ramp-up, 0.999 after);
    ema_decay_after_rampup: switch to this decay once the ramp-up ends (None keeps ema_decay);
    consistency_weight: the maximum weight of the consistency cost; rampup_epochs: sigmoid
    ramp-up length; steps_per_epoch: None = one pass over the unlabeled loader;
    logit_distance_cost: weight of the distance between the student's class and consistency
    logits (two heads, the paper's 0.01), or None for one head (consistency on the class logits).
    """

    ema_decay: float = 0.99
    consistency_weight: float = 10.0
    rampup_epochs: float = 5.0
    ema_decay_after_rampup: float | None = None
    steps_per_epoch: int | None = None
    logit_distance_cost: float | None = PAPER_LOGIT_DISTANCE_COST

    def __post_init__(self) -> None:
        for name in ("ema_decay", "ema_decay_after_rampup"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.consistency_weight < 0 or self.rampup_epochs < 0:
            raise ValueError("consistency_weight and rampup_epochs must be >= 0")
        if self.logit_distance_cost is not None and self.logit_distance_cost < 0:
            raise ValueError(
                f"logit_distance_cost must be >= 0 or None, got {self.logit_distance_cost}"
            )
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")

    @property
    def two_heads(self) -> bool:
        return self.logit_distance_cost is not None

    def consistency_weight_at(self, progress: float) -> float:
        """The ramped consistency weight at ``progress`` epochs (fractional)."""
        return self.consistency_weight * sigmoid_rampup(progress, self.rampup_epochs)

    def ema_decay_at(self, progress: float, *, step: int) -> float:
        """The EMA decay of optimisation step ``step`` (0-based) at ``progress`` epochs."""
        decay = self.ema_decay
        if self.ema_decay_after_rampup is not None and progress >= self.rampup_epochs:
            decay = self.ema_decay_after_rampup
        return min(decay, 1.0 - 1.0 / (step + 1))


def sigmoid_rampup(epoch: float, rampup_epochs: float) -> float:
    """exp(-5 (1 - t)^2) with t = clip(epoch / rampup_epochs, 0, 1); 1.0 when no ramp-up."""
    if rampup_epochs <= 0:
        return 1.0
    t = min(max(epoch / rampup_epochs, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def softmax_mse_consistency(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor
) -> torch.Tensor:
    """Mean over the batch of ||softmax(student) - softmax(teacher)||^2; logits (N, C) -> scalar.

    The teacher side is detached: gradients flow to the student only.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"shapes differ: {student_logits.shape} vs {teacher_logits.shape}")
    student = torch.softmax(student_logits, dim=1)
    teacher = torch.softmax(teacher_logits.detach(), dim=1)
    return ((student - teacher) ** 2).sum(dim=1).mean()


def logit_distance(class_logits: torch.Tensor, consistency_logits: torch.Tensor) -> torch.Tensor:
    """Mean over batch and classes of (class - consistency)^2; logits (N, C) -> scalar.

    Symmetric, both sides receive gradients (the paper's ``symmetric_mse_loss`` divided by the
    batch size).
    """
    if class_logits.shape != consistency_logits.shape:
        raise ValueError(f"shapes differ: {class_logits.shape} vs {consistency_logits.shape}")
    return ((class_logits - consistency_logits) ** 2).mean()


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of the student with gradients off (updated only by :func:`ema_update`)."""
    teacher = copy.deepcopy(student)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def _num_classes(student: nn.Module) -> int:
    value = getattr(student, "num_classes", None)
    if value is None:
        value = getattr(getattr(student, "config", None), "num_classes", None)
    if value is None:
        raise ValueError(
            "a two-head Mean Teacher student needs num_classes or config.num_classes; "
            "pass num_classes"
        )
    return int(value)


def make_consistency_head(student: nn.Module, *, num_classes: int | None = None) -> nn.Linear:
    """The student's second head: Linear(embedding_dim -> num_classes) on its pooled embedding.

    ``num_classes`` defaults to ``student.num_classes`` or ``student.config.num_classes``.
    """
    embedding_dim = getattr(student, "embedding_dim", None)
    if embedding_dim is None or not hasattr(student, "forward_with_features"):
        raise ValueError(
            "a two-head Mean Teacher student must expose forward_with_features(x) -> "
            "(logits, [feature maps]) and embedding_dim; set logit_distance_cost=None for one head"
        )
    classes = num_classes if num_classes is not None else _num_classes(student)
    return nn.Linear(int(embedding_dim), classes)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, *, decay: float) -> None:
    """teacher = decay * teacher + (1 - decay) * student, for parameters only.

    Buffers (BatchNorm running statistics and counters) are left alone: the teacher's are its
    own (module docstring). ``decay=0`` makes the teacher's parameters a copy of the student's.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    teacher_params = dict(teacher.named_parameters())
    for name, student_param in student.named_parameters():
        teacher_params[name].mul_(decay).add_(student_param.detach(), alpha=1.0 - decay)


@torch.no_grad()
def _teacher_logits(teacher: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    # Train mode: batch statistics and dropout are part of the teacher's noise, as in the paper,
    # and this pass moves the teacher's own running statistics (module docstring).
    teacher.train()
    return teacher(inputs)


def _pooled(feature_map: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) -> (N, C): the spatial mean, as the class head's pooling."""
    if feature_map.ndim <= 2:
        return feature_map
    return feature_map.mean(dim=tuple(range(2, feature_map.ndim)))


def _split_views(inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(inputs, list | tuple) or len(inputs) != 2:
        raise ValueError("Mean Teacher loaders must yield ((student_view, teacher_view), y, idx)")
    return inputs[0], inputs[1]


@dataclass(frozen=True)
class MeanTeacherStep:
    """What one student step did. Floats: ``loss`` (total), ``class_loss`` (mean cross-entropy
    of the labeled items), ``consistency_loss`` (unweighted), ``logit_distance`` (unweighted; 0
    with one head). Tensors (detached, on the training device), for the labeled items of the
    labeled batch (y >= 0), L of them: ``inputs`` their student views (L, ...), ``labels`` (L,),
    ``indices`` their dataset indices (L,), ``class_losses`` their cross-entropy (L,) from the
    forward pass before the update (what OHEM ranks)."""

    loss: float
    class_loss: float
    consistency_loss: float
    logit_distance: float
    inputs: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    class_losses: torch.Tensor

    def losses(self) -> dict[str, float]:
        return {
            "loss": self.loss,
            "class_loss": self.class_loss,
            "consistency_loss": self.consistency_loss,
            "logit_distance": self.logit_distance,
        }


def mean_teacher_step(
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    labeled_batch: Any,
    unlabeled_batch: Any,
    *,
    consistency_weight: float,
    ema_decay: float,
    device: torch.device | str,
    consistency_head: nn.Module | None = None,
    logit_distance_cost: float = 0.0,
) -> MeanTeacherStep:
    """One optimisation step of the student, then the teacher's EMA update.

    Batches are ``((student_view, teacher_view), y, idx)`` with views (B, C, H, W); the
    cross-entropy uses the labeled batch's items with y >= 0 only, the consistency cost every
    item of both batches (one student forward over their concatenation, so BatchNorm normalises
    both with the same statistics). With ``consistency_head`` (two heads) the consistency cost
    compares that head's softmax with the teacher's class softmax and ``logit_distance_cost``
    ties the two student heads; ``optimizer`` must then hold the head's parameters too. Without
    it the consistency acts on the class logits. The teacher runs in train mode without
    gradients (its running statistics are its own, see the module docstring).
    """
    device = torch.device(device)
    labeled_views, labels, indices = labeled_batch
    labeled_student, labeled_teacher = _split_views(labeled_views)
    unlabeled_student, unlabeled_teacher = _split_views(unlabeled_batch[0])
    labels = torch.as_tensor(labels).to(device)
    indices = torch.as_tensor(indices).to(device)
    student_inputs = torch.cat([labeled_student, unlabeled_student]).to(device, non_blocking=True)
    teacher_inputs = torch.cat([labeled_teacher, unlabeled_teacher]).to(device, non_blocking=True)
    student.train()
    if consistency_head is not None:
        consistency_head.train()
        class_logits, features = student.forward_with_features(student_inputs)
        consistency_logits = consistency_head(_pooled(features[-1]))
        distance = logit_distance(class_logits, consistency_logits)
    else:
        class_logits = student(student_inputs)
        consistency_logits = class_logits
        distance = class_logits.new_zeros(())
    teacher_logits = _teacher_logits(teacher, teacher_inputs)

    has_label = labels >= 0
    labeled_logits = class_logits[: len(labels)][has_label]
    class_losses = F.cross_entropy(labeled_logits, labels[has_label], reduction="none")
    class_loss = class_losses.mean() if has_label.any() else class_logits.sum() * 0.0
    consistency_loss = softmax_mse_consistency(consistency_logits, teacher_logits)
    loss = class_loss + consistency_weight * consistency_loss
    if consistency_head is not None:
        loss = loss + logit_distance_cost * distance
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    ema_update(teacher, student, decay=ema_decay)
    return MeanTeacherStep(
        loss=float(loss.detach()),
        class_loss=float(class_loss.detach()),
        consistency_loss=float(consistency_loss.detach()),
        logit_distance=float(distance.detach()),
        inputs=student_inputs[: len(labels)][has_label].detach(),
        labels=labels[has_label],
        indices=indices[has_label],
        class_losses=class_losses.detach(),
    )


def _cycle(loader: Iterable[Any]) -> Iterator[Any]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("a Mean Teacher loader yielded no batches")


class MeanTeacherLoop:
    """A student, its teacher and everything that trains them, one :meth:`step` at a time.

    Creates the consistency head (two heads), the SGD optimizer over the student and that head
    (``train.make_optimizer``), a cosine schedule over ``total_steps`` and a cycling iterator
    over ``unlabeled_loader``; :meth:`step` applies the config's ramp-up and EMA schedules at
    the given fractional epoch. Call ``seed_everything`` before constructing it (the head's
    initial weights come from torch's global generator).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        unlabeled_loader: Iterable[Any],
        *,
        config: MeanTeacherConfig,
        train: TrainConfig,
        total_steps: int,
        device: torch.device,
    ) -> None:
        self.student = student.to(device)
        self.teacher = teacher.to(device)
        self.config = config
        self.device = device
        self.consistency_head = (
            make_consistency_head(student).to(device) if config.two_heads else None
        )
        trained = nn.ModuleList([student] + [m for m in [self.consistency_head] if m is not None])
        self.optimizer = make_optimizer(trained, train)
        self.scheduler = make_scheduler(self.optimizer, total_steps=total_steps)
        self.unlabeled_batches = _cycle(unlabeled_loader)
        self.global_step = 0
        self.consistency_weight = 0.0
        self.ema_decay = 0.0

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, labeled_batch: Any, *, progress: float) -> MeanTeacherStep:
        """One student step on ``labeled_batch`` and the next unlabeled batch, at ``progress``
        epochs (fractional; drives the ramp-up), then the scheduler step."""
        self.consistency_weight = self.config.consistency_weight_at(progress)
        self.ema_decay = self.config.ema_decay_at(progress, step=self.global_step)
        result = mean_teacher_step(
            self.student,
            self.teacher,
            self.optimizer,
            labeled_batch,
            next(self.unlabeled_batches),
            consistency_weight=self.consistency_weight,
            ema_decay=self.ema_decay,
            device=self.device,
            consistency_head=self.consistency_head,
            logit_distance_cost=self.config.logit_distance_cost or 0.0,
        )
        self.scheduler.step()
        self.global_step += 1
        return result


def train_mean_teacher(
    student: nn.Module,
    teacher: nn.Module,
    labeled_loader: DataLoader,
    unlabeled_loader: DataLoader,
    *,
    config: MeanTeacherConfig,
    train: TrainConfig,
    on_epoch: EpochCallback | None = None,
    val_loader: DataLoader | None = None,
) -> list[dict[str, float]]:
    """Train ``student`` (SGD, cosine schedule from ``train``) and its EMA ``teacher``.

    Returns one dict per epoch: epoch, loss, class_loss, consistency_loss, logit_distance (epoch
    means), consistency_weight, ema_decay, lr, seconds, and with ``val_loader`` (single-view
    items) val_student_accuracy and val_teacher_accuracy. ``on_epoch`` works as in ``train.fit``.
    Deploy the teacher (the paper evaluates it).
    """
    seed_everything(train.seed)
    device = resolve_device(train.device)
    steps_per_epoch = config.steps_per_epoch or max(1, len(unlabeled_loader))
    loop = MeanTeacherLoop(
        student,
        teacher,
        unlabeled_loader,
        config=config,
        train=train,
        total_steps=train.epochs * steps_per_epoch,
        device=device,
    )
    labeled_batches = _cycle(labeled_loader)
    history: list[dict[str, float]] = []
    for epoch in range(train.epochs):
        started = time.perf_counter()
        lr = loop.lr
        sums = {"loss": 0.0, "class_loss": 0.0, "consistency_loss": 0.0, "logit_distance": 0.0}
        for step in range(steps_per_epoch):
            result = loop.step(next(labeled_batches), progress=epoch + step / steps_per_epoch)
            for key, value in result.losses().items():
                sums[key] += value
        metrics: dict[str, float] = {
            "epoch": epoch,
            **{key: value / steps_per_epoch for key, value in sums.items()},
            "consistency_weight": loop.consistency_weight,
            "ema_decay": loop.ema_decay,
            "lr": lr,
        }
        if val_loader is not None:
            metrics["val_student_accuracy"] = evaluate(student, val_loader, device=device)[
                "accuracy"
            ]
            metrics["val_teacher_accuracy"] = evaluate(teacher, val_loader, device=device)[
                "accuracy"
            ]
        metrics["seconds"] = time.perf_counter() - started
        history.append(metrics)
        if not call_on_epoch(on_epoch, epoch, metrics):
            break
    return history
