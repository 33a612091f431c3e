import numpy as np
import pytest
import torch

from mlcore.backbones import build_backbone
from mlcore.config import BackboneConfig, TrainConfig
from mlcore.data import ArrayImageDataset, make_loader
from mlcore.loss_prediction import (
    LossPredictionConfig,
    LossPredictionModule,
    margin_ranking_loss,
    predict_losses,
    train_with_loss_prediction,
)

from .conftest import make_square_images

TINY = BackboneConfig(name="small_cnn", in_channels=1, input_size=16, width_mult=0.25)


def test_ranking_loss_is_zero_when_the_order_matches_by_more_than_the_margin():
    # Pairs are (0, 2) and (1, 3): true losses 5 > 1 and 0.5 < 4.
    target = torch.tensor([5.0, 0.5, 1.0, 4.0])
    agreeing = torch.tensor([3.0, -2.0, 1.5, 0.0])  # differences +1.5 and -2.0, beyond margin 1
    assert margin_ranking_loss(agreeing, target, margin=1.0) == 0.0


def test_ranking_loss_is_positive_otherwise():
    target = torch.tensor([5.0, 0.5, 1.0, 4.0])
    within_margin = torch.tensor([1.4, -2.0, 1.0, 0.0])  # agrees on (0,2) by only 0.4
    assert margin_ranking_loss(within_margin, target, margin=1.0) == pytest.approx(0.3)
    reversed_order = torch.tensor([0.0, 3.0, 2.0, 0.0])  # both pairs in the wrong order
    assert margin_ranking_loss(reversed_order, target, margin=1.0) == pytest.approx(3.5)


def test_ranking_loss_details():
    predicted = torch.tensor([0.0, 2.0], requires_grad=True)
    target = torch.tensor([1.0, 3.0], requires_grad=True)
    loss = margin_ranking_loss(predicted, target, margin=0.5)
    loss.backward()
    assert predicted.grad is not None and target.grad is None  # the target is detached
    odd = margin_ranking_loss(torch.tensor([3.0, 0.0, 99.0]), torch.tensor([2.0, 1.0, 0.0]))
    assert odd == 0.0  # the odd sample sits out
    assert margin_ranking_loss(torch.tensor([1.0]), torch.tensor([1.0])) == 0.0
    with pytest.raises(ValueError, match=r"\(B,\)"):
        margin_ranking_loss(torch.zeros(4, 1), torch.zeros(4, 1))


def test_module_maps_feature_maps_to_one_loss_per_sample():
    torch.manual_seed(0)
    model = build_backbone(TINY)
    module = LossPredictionModule(model.feature_channels, hidden=16)
    _, features = model.forward_with_features(torch.randn(5, 1, 16, 16))
    predicted = module(features)
    assert predicted.shape == (5,)
    predicted.sum().backward()
    assert all(p.grad is not None for p in module.parameters())
    with pytest.raises(ValueError, match="expected 3 feature maps"):
        module(features[:2])


def _dataset() -> ArrayImageDataset:
    images, labels = make_square_images(64, seed=4)
    return ArrayImageDataset(images, labels)


def test_the_ranking_loss_teaches_the_module_to_order_samples_by_loss():
    # Feature maps whose mean intensity in the first map sets the "true loss": a module trained
    # only through the pairwise ranking loss must recover that order on fresh samples.
    generator = torch.Generator().manual_seed(0)

    def sample(count: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        maps = [torch.randn(count, 4, 3, 3, generator=generator) for _ in range(2)]
        return maps, maps[0][:, 0].mean(dim=(1, 2)) * 3.0

    torch.manual_seed(0)
    module = LossPredictionModule([4, 4], hidden=16)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    for _ in range(200):
        maps, target = sample(32)
        loss = margin_ranking_loss(module(maps), target, margin=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    maps, target = sample(200)
    with torch.no_grad():
        predicted = module(maps)
    pairs = torch.combinations(torch.arange(200), 2)
    agree = (predicted[pairs[:, 0]] > predicted[pairs[:, 1]]) == (
        target[pairs[:, 0]] > target[pairs[:, 1]]
    )
    assert agree.float().mean() > 0.9


def test_joint_training_runs_and_predictions_follow_dataset_order():
    dataset = _dataset()
    torch.manual_seed(0)
    model = build_backbone(TINY)
    module = LossPredictionModule(model.feature_channels, hidden=16)
    initial_module = [p.detach().clone() for p in module.parameters()]
    history = train_with_loss_prediction(
        model,
        module,
        make_loader(dataset, batch_size=16, shuffle=True, seed=0),
        config=LossPredictionConfig(margin=0.1, hidden=16),
        train=TrainConfig(epochs=5, lr=0.05, device="cpu"),
    )
    assert len(history) == 5
    assert history[-1]["class_loss"] < history[0]["class_loss"]
    assert all(np.isfinite(row["ranking_loss"]) for row in history)
    assert any(not torch.equal(a, b) for a, b in zip(initial_module, module.parameters()))
    ordered = predict_losses(
        model, module, make_loader(dataset, batch_size=10, shuffle=False, seed=0), device="cpu"
    )
    shuffled = predict_losses(
        model, module, make_loader(dataset, batch_size=10, shuffle=True, seed=9), device="cpu"
    )
    assert ordered.shape == (64,)
    assert np.allclose(ordered, shuffled, atol=1e-5)


def _train_once(*, weight: float, stop_after: int | None) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = build_backbone(TINY)
    module = LossPredictionModule(model.feature_channels, hidden=16)
    config = LossPredictionConfig(weight=weight, stop_gradient_after_epoch=stop_after, hidden=16)
    train_with_loss_prediction(
        model,
        module,
        make_loader(_dataset(), batch_size=16, shuffle=True, seed=0),
        config=config,
        train=TrainConfig(epochs=1, lr=0.05, device="cpu"),
    )
    return [p.detach().clone() for p in model.parameters()]


def test_stop_gradient_keeps_the_ranking_loss_out_of_the_target_network():
    # With detached features the target network's update cannot depend on the ranking weight.
    detached_light = _train_once(weight=0.1, stop_after=0)
    detached_heavy = _train_once(weight=10.0, stop_after=0)
    assert all(torch.equal(a, b) for a, b in zip(detached_light, detached_heavy))
    attached_heavy = _train_once(weight=10.0, stop_after=None)
    assert any(not torch.equal(a, b) for a, b in zip(detached_heavy, attached_heavy))
