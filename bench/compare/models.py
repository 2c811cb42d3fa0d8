"""The seed model and minires's default ResNet in PyTorch, layer for layer as minires builds them
(include/minires/models/fashion_mnist.hpp), with Keras 2.0's BatchNorm settings (eps 1e-3,
momentum 0.99, i.e. PyTorch momentum 0.01)."""
import torch
from torch import nn


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class SeedBlock(nn.Module):
    """The notebook's conv_block (projection shortcut) / identity_block: 1x1 conv-BN-ReLU x3
    (the third without ReLU), shortcut, add, ReLU."""

    def __init__(self, cin, filters, projection):
        super().__init__()
        f1, f2, f3 = filters
        self.main = nn.Sequential(
            nn.Conv2d(cin, f1, 1), bn(f1), nn.ReLU(),
            nn.Conv2d(f1, f2, 1), bn(f2), nn.ReLU(),
            nn.Conv2d(f2, f3, 1), bn(f3))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, f3, 1), bn(f3)) if projection else nn.Identity()

    def forward(self, x):
        return torch.relu(self.main(x) + self.shortcut(x))


def seed_model():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), bn(4), nn.ReLU(), nn.MaxPool2d(2),
        SeedBlock(4, (4, 4, 64), True), SeedBlock(64, (4, 4, 64), False),
        SeedBlock(64, (4, 4, 64), False),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64 * 7 * 7, 10))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), bn(cout))
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x):
        return torch.relu(self.main(x) + self.shortcut(x))


def resnet_model(widths=(32, 64, 128), blocks=(2, 2, 1), strides=(2, 2, 2), stem=32):
    layers = [nn.Conv2d(1, stem, 3, padding=1, bias=False), bn(stem), nn.ReLU()]
    cin = stem
    for w, n, s in zip(widths, blocks, strides):
        for b in range(n):
            layers.append(BasicBlock(cin, w, s if b == 0 else 1))
            cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    return nn.Sequential(*layers)


def build(name):
    """The model and the optimizer fmnist uses for it by default."""
    if name == "seed":
        model = seed_model()
        opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-8)
    elif name == "resnet":
        model = resnet_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)
    else:
        raise ValueError(f"unknown model {name!r} (expected seed or resnet)")
    return model, opt
