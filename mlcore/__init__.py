"""mlcore: the ML library behind the labeling platform, usable from a notebook with no database.

Flat modules of plain functions and small modules, arrays and tensors in, arrays and small
dataclasses out, frozen dataclass configs, explicit seeds and devices:

- config: BackboneConfig, TrainConfig, presets, resolve_device, seed_everything
- data: ImageRecord, ImageDataset, ArrayImageDataset, TwoViews, load_fashion_mnist, make_loader
- augment: weak (teacher) / strong (student) / eval transforms
- attention: CBAM (Woo et al. 2018)
- backbones: registry of Classifier networks with CBAM switchable
- mean_teacher: Mean Teacher (Tarvainen & Valpola 2017)
- loss_prediction: Learning Loss for Active Learning (Yoo & Kweon 2019)
- train: optimizer, train_one_epoch, predict_proba, per_sample_losses, fit
- checkpoints: safetensors checkpoints with JSON metadata, pickle refused
"""
