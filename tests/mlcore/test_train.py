import numpy as np
import pytest
import torch

from mlcore.backbones import build_backbone
from mlcore.config import BackboneConfig, TrainConfig
from mlcore.data import ArrayImageDataset, make_loader
from mlcore.train import (
    TrainingCancelled,
    evaluate,
    fit,
    make_optimizer,
    per_sample_losses,
    predict_proba,
    train_one_epoch,
)

from .conftest import make_square_images

TINY = BackboneConfig(name="small_cnn", in_channels=1, input_size=16, width_mult=0.25)
FAST = TrainConfig(epochs=4, batch_size=16, lr=0.05, device="cpu", seed=0)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(TINY)


def test_fit_reduces_the_loss_on_a_separable_problem(square_dataset):
    loader = make_loader(square_dataset, batch_size=16, shuffle=True, seed=0)
    seen = []
    history = fit(
        _model(),
        loader,
        train=TrainConfig(epochs=6, lr=0.05, device="cpu"),
        val_loader=make_loader(square_dataset, batch_size=32, shuffle=False, seed=0),
        on_epoch=lambda epoch, metrics: seen.append(epoch),
    )
    assert seen == list(range(6))
    assert [row["epoch"] for row in history] == list(range(6))
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["lr"] < history[0]["lr"]  # the cosine schedule decays
    assert {"val_loss", "val_accuracy", "seconds"} <= set(history[-1])


def test_callback_returning_false_or_cancelling_stops_training(square_dataset):
    loader = make_loader(square_dataset, batch_size=16, shuffle=True, seed=0)
    assert len(fit(_model(), loader, train=FAST, on_epoch=lambda e, m: e < 1)) == 2

    def cancel(epoch, metrics):
        raise TrainingCancelled

    assert len(fit(_model(), loader, train=FAST, on_epoch=cancel)) == 1

    def broken(epoch, metrics):
        raise RuntimeError("progress store down")

    with pytest.raises(RuntimeError, match="progress store down"):
        fit(_model(), loader, train=FAST, on_epoch=broken)


def test_predictions_come_back_in_dataset_order_whatever_the_shuffling(square_dataset):
    model = _model()
    ordered = make_loader(square_dataset, batch_size=10, shuffle=False, seed=0)
    shuffled = make_loader(square_dataset, batch_size=10, shuffle=True, seed=5)
    probabilities = predict_proba(model, ordered, device="cpu")
    assert probabilities.shape == (len(square_dataset), 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(probabilities, predict_proba(model, shuffled, device="cpu"), atol=1e-6)
    assert model.training  # prediction restores the mode it found


def test_per_sample_losses_match_cross_entropy_and_skip_unlabeled():
    images, labels = make_square_images(12)
    labels[3] = -1
    dataset = ArrayImageDataset(images, labels)
    model = _model()
    loader = make_loader(dataset, batch_size=5, shuffle=True, seed=1)
    losses = per_sample_losses(model, loader, device="cpu")
    probabilities = predict_proba(model, loader, device="cpu")
    assert losses.shape == (12,)
    assert np.isnan(losses[3]) and not np.isnan(np.delete(losses, 3)).any()
    expected = -np.log(probabilities[np.arange(12), np.maximum(labels, 0)])
    assert np.allclose(np.delete(losses, 3), np.delete(expected, 3), atol=1e-4)


def test_sample_weights_and_unlabeled_items_steer_the_loss():
    images, labels = make_square_images(32)
    dataset = ArrayImageDataset(images, labels)
    loader = make_loader(dataset, batch_size=32, shuffle=False, seed=0)
    train = TrainConfig(lr=0.1, device="cpu")
    # Weight only class 0: the model learns to call everything class 0.
    model = _model()
    optimizer = make_optimizer(model, train)
    weights = (labels == 0).astype(np.float32)
    for _ in range(8):
        train_one_epoch(model, loader, optimizer, device="cpu", sample_weights=weights)
    predicted = predict_proba(model, loader, device="cpu").argmax(axis=1)
    assert (predicted == 0).mean() > 0.9
    # An all-unlabeled loader trains nothing and says so.
    unlabeled = make_loader(ArrayImageDataset(images), batch_size=8, shuffle=False, seed=0)
    before = [p.clone() for p in model.parameters()]
    assert np.isnan(train_one_epoch(model, unlabeled, optimizer, device="cpu"))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_weight_decay_skips_biases_and_norm_scales():
    model = _model()
    optimizer = make_optimizer(model, TrainConfig(weight_decay=1e-3))
    decayed, free = optimizer.param_groups
    assert decayed["weight_decay"] == 1e-3 and free["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"])
    assert all(p.ndim == 1 for p in free["params"])
    assert len(decayed["params"]) + len(free["params"]) == len(list(model.parameters()))


def test_two_view_batches_are_refused_with_a_clear_error(square_dataset):
    from mlcore.data import TwoViews

    dataset = ArrayImageDataset(
        square_dataset.images[:, 0].numpy(),
        square_dataset.labels,
        transform=TwoViews(lambda x: x.float(), lambda x: x.float()),
    )
    loader = make_loader(dataset, batch_size=8, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="mean_teacher"):
        evaluate(_model(), loader, device="cpu")
