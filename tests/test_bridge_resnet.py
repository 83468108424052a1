"""eosdyn.bridge.ResNet18: the CIFAR ResNet-18, its parameter count, and training on fake CIFAR."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eosdyn.bridge as B  # noqa: E402


def expected_count(width=64, num_classes=10, in_channels=3):
    """Parameters of the CIFAR ResNet-18, counted from the architecture: a bias-free 3×3 stem
    conv + BN; per basic block two bias-free 3×3 convs + two BNs (γ, β each), and a bias-free
    1×1 conv + BN on the shortcut where the shape changes; a linear head."""
    bn = 2  # γ and β per channel (running statistics are buffers, not parameters)
    n = 9 * in_channels * width + bn * width
    cin = width
    for mult, stride in zip((1, 2, 4, 8), (1, 2, 2, 2)):
        cout = width * mult
        for s in (stride, 1):
            n += 9 * cin * cout + 9 * cout * cout + 2 * bn * cout
            if s != 1 or cin != cout:
                n += cin * cout + bn * cout
            cin = cout
    return n + cin * num_classes + num_classes


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_is_the_cifar_resnet18():
    model = B.ResNet18()
    assert n_params(model) == expected_count() == 11_173_962
    assert n_params(B.ResNet18(num_classes=100)) == expected_count(num_classes=100) == 11_220_132
    assert n_params(B.ResNet18(width=4)) == expected_count(width=4)
    assert n_params(B.ResNet18(in_channels=1, width=4)) == expected_count(width=4, in_channels=1)
    # the architecture: 3x3 stride-1 stem, no max-pool, 8 basic blocks, 3 projection shortcuts
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.AdaptiveMaxPool2d)) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(c.kernel_size == (3, 3) for c in convs) == 17 and sum(c.kernel_size == (1, 1) for c in convs) == 3
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == len(convs)
    assert [layer[0].conv1.stride[0] for layer in (model.layer1, model.layer2, model.layer3, model.layer4)] == \
        [1, 2, 2, 2]
    assert [layer[1].conv2.out_channels for layer in (model.layer1, model.layer2, model.layer3, model.layer4)] == \
        [64, 128, 256, 512]
    assert model.linear.in_features == 512


def test_bad_arguments():
    with pytest.raises(ValueError, match="width"):
        B.ResNet18(width=0)
    with pytest.raises(ValueError, match="num_classes"):
        B.ResNet18(num_classes=0)
    with pytest.raises(TypeError, match="in_channels"):
        B.ResNet18(in_channels=2.0)


def write_fake_cifar(root, n=20, seed=0):
    """A fake CIFAR-10 training batch in the python-pickle format (cifar-10-batches-py/)."""
    d = root / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    with open(d / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"data_batch_1"}, fh)
    return labels


def test_forward_backward_and_training_on_fake_cifar(tmp_path):
    labels = write_fake_cifar(tmp_path, n=20)
    X, y = B.cifar10(tmp_path)
    assert X.shape == (20, 3, 32, 32) and y.tolist() == labels
    torch.manual_seed(0)
    model = B.ResNet18(width=4)
    maps = {}

    def hook(module, inputs, output):
        maps["layer4"] = output.shape

    model.layer4.register_forward_hook(hook)
    out = model(X)
    assert out.shape == (20, 10) and maps["layer4"] == (20, 32, 4, 4)  # 32×32 → 4×4 before the pool
    loss = B.cross_entropy_loss(out, y)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad()
    # a few full-batch SGD steps on the same 20 images: the loss goes down
    tr = B.train(model, B.cross_entropy_loss, (X, y), torch.optim.SGD(model.parameters(), lr=0.05), 8,
                 track_every=None)
    assert not tr.diverged and np.all(np.isfinite(tr.loss))
    assert tr.loss[-1] < 0.9 * tr.loss[0], tr.loss
