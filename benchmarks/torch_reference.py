"""PyTorch versions of the benchmarked models, optimizer and losses (the authors' framework).

The same architectures as `pdjax.models` (CIFAR VGG: Conv3x3-BN-ReLU, 2x2 max-pools, a final
2x2 average pool and one Linear; ResNet18 with a 3x3 stride-1 stem and the authors' scaled
identity shortcut), SGD with Nesterov momentum 0.9 and weight decay, cross-entropy and the KD
loss of PAPER.md. Needs `pip install -e '.[bench]'` (torch).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as tnn
import torch.nn.functional as F

from pdjax.models import RESNET_STAGE_WIDTHS, VGG_PLANS, M


class VGG(tnn.Module):
    def __init__(self, plan: tuple, num_classes: int):
        super().__init__()
        layers: list[tnn.Module] = []
        cin = 3
        for v in plan:
            if v == M:
                layers.append(tnn.MaxPool2d(2))
            else:
                layers += [tnn.Conv2d(cin, v, 3, padding=1), tnn.BatchNorm2d(v), tnn.ReLU(inplace=True)]
                cin = v
        layers.append(tnn.AvgPool2d(2))
        self.features = tnn.Sequential(*layers)
        self.fc = tnn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


class Scale(tnn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.scale = tnn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x):
        return x * self.scale


class BasicBlock(tnn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                           tnn.BatchNorm2d(cout))
        else:
            self.shortcut = Scale(cout)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet18(tnn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = tnn.Sequential(tnn.Conv2d(3, 64, 3, 1, 1, bias=False), tnn.BatchNorm2d(64),
                                   tnn.ReLU(inplace=True))
        blocks, cin = [], 64
        for i, width in enumerate(RESNET_STAGE_WIDTHS):
            for j in range(2):
                blocks.append(BasicBlock(cin, width, 2 if i > 0 and j == 0 else 1))
                cin = width
        self.blocks = tnn.Sequential(*blocks)
        self.fc = tnn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def get(name: str, num_classes: int) -> tnn.Module:
    if name in VGG_PLANS:
        return VGG(VGG_PLANS[name], num_classes)
    if name == "resnet18":
        return ResNet18(num_classes)
    raise ValueError(f"no PyTorch reference for {name!r}")


def kd_loss(student_logits, teacher_logits, labels, temperature: float = 10.0, alpha: float = 0.95):
    kl = F.kl_div(F.log_softmax(student_logits / temperature, 1),
                  F.softmax(teacher_logits / temperature, 1), reduction="batchmean")
    return alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(student_logits, labels)


class TorchSetup:
    """A PyTorch model, optimizer and one float batch, with train / eval / KD step functions."""

    def __init__(self, name: str, batch_size: int, num_classes: int = 100, seed: int = 0):
        torch.manual_seed(seed)
        self.model = get(name, num_classes)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9,
                                         nesterov=True, weight_decay=5e-4)
        self.images = torch.randn(batch_size, 3, 32, 32)
        self.labels = torch.randint(0, num_classes, (batch_size,))

    def train_step(self, teacher: "TorchSetup | None" = None) -> Any:
        self.model.train()
        teacher_logits = None
        if teacher is not None:
            teacher.model.eval()
            with torch.no_grad():
                teacher_logits = teacher.model(self.images)
        logits = self.model(self.images)
        if teacher_logits is None:
            loss = F.cross_entropy(logits, self.labels)
        else:
            loss = kd_loss(logits, teacher_logits, self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def eval_step(self) -> Any:
        self.model.eval()
        with torch.no_grad():
            logits = self.model(self.images)
        return (logits.argmax(1) == self.labels).sum().item()
