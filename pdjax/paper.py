"""PAPER.md's training schedules (the authors' hyperparameters), as `pdjax.steps.Schedule`s."""

from __future__ import annotations

from pdjax.steps import Schedule

# CIFAR-100, VGG: teacher, scratch students and KD; each pruning round.
CIFAR_TRAIN = Schedule(epochs=200, batch_size=128, lr=0.1, milestones=(60, 120, 160), lr_factor=0.2,
                       weight_decay=5e-4)
CIFAR_KD = CIFAR_TRAIN
CIFAR_PRUNE = Schedule(epochs=130, batch_size=128, lr=0.1, milestones=(39, 84), lr_factor=0.1,
                       weight_decay=2e-4)
# Tiny-ImageNet: ResNet18 / VGG16 teachers and scratch students; MobileNetV2 from scratch;
# each ResNet18 pruning round; KD into ResNet18 / VGG16 and into MobileNetV2.
TINY_TRAIN = Schedule(epochs=100, batch_size=128, lr=0.01, milestones=(30, 60, 80), lr_factor=0.1,
                      weight_decay=1e-4)
TINY_MOBILENET_TRAIN = Schedule(epochs=120, batch_size=256, lr=0.05, milestones=(60, 80, 100),
                                lr_factor=0.1, weight_decay=5e-4)
TINY_PRUNE = Schedule(epochs=50, batch_size=512, lr=0.04, milestones=(10, 30), lr_factor=0.1,
                      weight_decay=1e-4)
TINY_KD = Schedule(epochs=100, batch_size=256, lr=0.01, milestones=(30, 60, 80), lr_factor=0.2,
                   weight_decay=5e-4)
TINY_MOBILENET_KD = Schedule(epochs=100, batch_size=256, lr=0.05, milestones=(60, 80), lr_factor=0.1,
                             weight_decay=5e-4)
