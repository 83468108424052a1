"""Small models and the two losses of the EoS experiments.

Losses (both return the *mean over the examples of the batch*, as :func:`eosdyn.bridge.hvp`
expects):

- :func:`mse_loss` — L = (1/2n) Σ_i ‖f(x_i) − y_i‖²: a half, the squared error summed over
  the output coordinates, averaged over the n examples (the convention of Cohen et al.
  2021's code). For a linear model f(x) = Wx it is the quadratic ½(θ−θ*)ᵀH(θ−θ*) + const
  with H = XᵀX/n (per output), so GD on it is stable iff η < 2/λ_max(XᵀX/n).
  Integer class labels are turned into one-hot targets.
- :func:`cross_entropy_loss` — the mean softmax cross-entropy (``torch.nn.functional.
  cross_entropy``); targets are class indices (or probabilities).

Models: :class:`MLP` (tanh or ReLU), :class:`SmallCNN` and :class:`ResNet18` (the CIFAR
variant, written here with ``torch.nn``: torchvision is not needed).
"""
from __future__ import annotations

import torch
from torch import nn

from .._validate import choice, nonneg_int

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU}


def mse_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(1/2n) Σ_i ‖outputs_i − targets_i‖² — half, summed over outputs, mean over examples.

    Integer ``targets`` of shape (n,) are class labels: they become one-hot vectors of
    length ``outputs.shape[1]``. A 1-D float target with 2-D outputs of width 1 is reshaped.
    """
    if not targets.dtype.is_floating_point:
        if outputs.ndim != 2:
            raise ValueError("mse_loss with integer (class) targets needs 2-D outputs (n, classes)")
        targets = nn.functional.one_hot(targets.long(), outputs.shape[1]).to(outputs.dtype)
    elif targets.ndim == 1 and outputs.ndim == 2 and outputs.shape[1] == 1:
        targets = targets[:, None]
    if outputs.shape != targets.shape:
        raise ValueError(f"mse_loss: outputs {tuple(outputs.shape)} and targets "
                         f"{tuple(targets.shape)} must have the same shape")
    n = outputs.shape[0] if outputs.ndim else 1
    return 0.5 * (outputs - targets).pow(2).sum() / n


def cross_entropy_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy over the batch; ``targets`` are class indices (or probabilities)."""
    return nn.functional.cross_entropy(outputs, targets)


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of examples whose argmax output equals the label (labels, or one-hot targets).

    NaN for regression (outputs of width 1 with float targets).
    """
    if outputs.ndim != 2 or outputs.shape[1] < 2:
        return float("nan")
    pred = outputs.argmax(dim=1)
    if targets.dtype.is_floating_point:
        if targets.ndim != 2 or targets.shape != outputs.shape:
            return float("nan")
        targets = targets.argmax(dim=1)
    return float((pred == targets).to(torch.float64).mean())


class MLP(nn.Module):
    """A fully connected net: in_dim → hidden[0] → … → hidden[-1] → out_dim.

    ``activation`` is "tanh" (default, smooth: the Hessian exists everywhere), "relu",
    "gelu" or "elu", applied after every hidden layer. Inputs of more than 2 dimensions are
    flattened. ``bias`` applies to every layer.
    """

    def __init__(self, in_dim: int, hidden=(200, 200), out_dim: int = 10, activation: str = "tanh",
                 bias: bool = True):
        super().__init__()
        in_dim = nonneg_int("in_dim", in_dim, minimum=1)
        out_dim = nonneg_int("out_dim", out_dim, minimum=1)
        if isinstance(hidden, int):
            hidden = (hidden,)
        hidden = tuple(nonneg_int("hidden", h, minimum=1) for h in hidden)
        act = ACTIVATIONS[choice("activation", activation, ACTIVATIONS)]
        layers, prev = [], in_dim
        for h in hidden:
            layers += [nn.Linear(prev, h, bias=bias), act()]
            prev = h
        layers.append(nn.Linear(prev, out_dim, bias=bias))
        self.net = nn.Sequential(*layers)
        self.activation = activation

    def forward(self, x):
        return self.net(x.flatten(1) if x.ndim > 2 else x)


class SmallCNN(nn.Module):
    """Two 3×3 conv layers (``width`` and 2·``width`` channels, each followed by the activation
    and 2×2 max-pooling), then a linear classifier. For 32×32 RGB (CIFAR-10) by default;
    ``image_size`` must be divisible by 4. ``batchnorm=True`` adds BatchNorm after each conv.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16,
                 image_size: int = 32, activation: str = "relu", batchnorm: bool = False):
        super().__init__()
        in_channels = nonneg_int("in_channels", in_channels, minimum=1)
        num_classes = nonneg_int("num_classes", num_classes, minimum=1)
        width = nonneg_int("width", width, minimum=1)
        image_size = nonneg_int("image_size", image_size, minimum=4)
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        act = ACTIVATIONS[choice("activation", activation, ACTIVATIONS)]

        def block(cin, cout):
            mods = [nn.Conv2d(cin, cout, 3, padding=1)]
            if batchnorm:
                mods.append(nn.BatchNorm2d(cout))
            return mods + [act(), nn.MaxPool2d(2)]

        self.features = nn.Sequential(*block(in_channels, width), *block(width, 2 * width))
        self.classifier = nn.Linear(2 * width * (image_size // 4) ** 2, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class _BasicBlock(nn.Module):
    """ResNet's basic block: two 3×3 conv–BN layers, ReLU after the first and after the sum
    with the shortcut (identity, or a 1×1 strided conv–BN where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for CIFAR-sized inputs (He et al. 2016, in the common CIFAR form).

    A 3×3 stride-1 stem conv (``width`` channels, no max-pool), batch norm and ReLU; four
    stages of two basic blocks each, with ``width``·(1, 2, 4, 8) channels and strides
    (1, 2, 2, 2) (a 1×1 strided conv + batch norm on the shortcut where the shape changes);
    global average pooling; a linear head to ``num_classes``. Convs have no bias (batch norm
    follows each). With ``width=64`` and 10 classes it has 11,173,962 parameters, the usual
    CIFAR-10 ResNet-18; a small ``width`` (e.g. 4) gives a tiny one for tests. Any input size
    works (the pooling is global); 32×32 leaves 4×4 maps before it.

    Batch norm makes the loss depend on the batch in training mode: the Hessian probes
    (:func:`~eosdyn.bridge.hvp`, :class:`~eosdyn.bridge.Probe`) use the model in the mode it
    is in.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64):
        super().__init__()
        num_classes = nonneg_int("num_classes", num_classes, minimum=1)
        in_channels = nonneg_int("in_channels", in_channels, minimum=1)
        width = nonneg_int("width", width, minimum=1)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, cin = [], width
        for mult, stride in zip((1, 2, 4, 8), (1, 2, 2, 2)):
            cout = width * mult
            stages.append(nn.Sequential(_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = nn.functional.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
