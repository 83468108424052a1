"""SGD on a per-example deep linear net: DeepLinear is a finite sum with a minibatch kernel (issue 13)."""
import numpy as np
import pytest

import eosdyn
from eosdyn.engine import minibatch_indices
from eosdyn.losses import DeepLinear, FiniteSumLoss
from eosdyn.rules import GD, SGD, HeavyBall
from eosdyn.sde import MinibatchNoise


def net(n=9, widths=(3,), seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    Y = X @ rng.standard_normal((3, 2)) + 0.3 * rng.standard_normal((n, 2))
    return DeepLinear(X, Y, list(widths))


def start(loss, seed=1, scale=0.5):
    return scale * np.random.default_rng(seed).standard_normal(loss.dim)


def test_a_batch_is_the_same_network_on_those_rows():
    loss = net()
    th = start(loss)
    assert isinstance(loss, FiniteSumLoss) and loss.n_examples == 9
    v, g = loss.batch_value_grad(th, np.arange(9))
    assert v == pytest.approx(loss.value(th), rel=1e-14)
    np.testing.assert_allclose(g, loss.grad(th), rtol=1e-13, atol=1e-15)
    for idx in ([4], [0, 7, 2], [5, 5, 1, 8]):          # a repeated index counts twice
        ref = DeepLinear(loss.X[idx], loss.Y[idx], [3])  # built independently on the rows
        v, g = loss.batch_value_grad(th, idx)
        assert v == pytest.approx(ref.value(th), rel=1e-14)
        np.testing.assert_allclose(g, ref.grad(th), rtol=1e-13, atol=1e-15)


def test_per_example_gradients_average_to_the_gradient():
    loss = net(widths=(4, 3))
    th = start(loss)
    G = loss.per_example_grads(th)
    assert G.shape == (9, loss.dim)
    np.testing.assert_allclose(G.mean(axis=0), loss.grad(th), rtol=1e-12, atol=1e-14)
    for i in (0, 8):
        np.testing.assert_allclose(G[i], DeepLinear(loss.X[i:i + 1], loss.Y[i:i + 1], [4, 3]).grad(th),
                                   rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("batch_size, momentum", [(2, 0.0), (4, 0.5)])
def test_sgd_equals_numpy_sgd_on_networks_built_from_the_batches(batch_size, momentum):
    loss = net()
    steps, seed, lr = 40, 3, 0.05
    th0 = np.stack([start(loss, s) for s in range(3)])
    res = eosdyn.ensemble(loss, SGD(lr, batch_size, momentum=momentum), th0, steps, record_every=1,
                          record_theta=True, seed=seed)
    assert not res.diverged.any()
    for i in range(3):
        th, v = th0[i].copy(), np.zeros(loss.dim)
        for t, idx in enumerate(minibatch_indices(seed, i, 9, batch_size, False, steps)):
            np.testing.assert_allclose(res.theta[i, t], th, rtol=1e-11, atol=1e-13)
            ref = DeepLinear(loss.X[idx], loss.Y[idx], [3])
            assert res.batch_loss[i, t] == pytest.approx(ref.value(th), rel=1e-11)
            v = momentum * v + ref.grad(th)
            th = th - lr * v
        np.testing.assert_allclose(res.final_theta[i], th, rtol=1e-11, atol=1e-13)
    assert np.abs(res.batch_loss - res.loss).max() > 1e-3   # real minibatches


def test_full_batch_sgd_is_gd_and_heavy_ball_bit_for_bit():
    loss = net()
    th0 = np.stack([start(loss, s) for s in range(2)])
    for sgd, full in ((SGD(0.05, 9), GD(0.05)), (SGD(0.05, 9, momentum=0.5), HeavyBall(0.05, momentum=0.5))):
        a = eosdyn.ensemble(loss, sgd, th0, 30, record_every=1, record_theta=True, kernel="trajectory")
        b = eosdyn.ensemble(loss, full, th0, 30, record_every=1, record_theta=True, kernel="trajectory")
        np.testing.assert_array_equal(a.theta, b.theta)


def test_minibatch_noise_takes_the_deep_linear_net():
    loss = net()
    th = start(loss)
    S = MinibatchNoise(loss, 3).covariance(th, loss)
    G = loss.per_example_grads(th)
    C = np.cov(G.T, bias=True) * (9 - 3) / (3 * (9 - 1))   # without replacement
    np.testing.assert_allclose(S, C, rtol=1e-10, atol=1e-14)
