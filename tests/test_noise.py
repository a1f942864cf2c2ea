"""Noise models: transition matrices, realised matrices on 60,000 labels, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from knntools.errors import InputError
from knntools.methods import noise as nz

N, C = 60000, 10
Y = np.repeat(np.arange(C), N // C)


def _tolerance(T: np.ndarray, n_per_class: int) -> np.ndarray:
    """5 standard errors of a binomial frequency, plus rounding."""
    return 5 * np.sqrt(T * (1 - T) / n_per_class) + 1.0 / n_per_class


@pytest.mark.parametrize("kind", ["uniform", "asymmetric-random", "pair", "random"])
@pytest.mark.parametrize("sampling", ["exact", "stochastic"])
def test_realised_matrix_matches_requested(kind, sampling):
    res = nz.add_label_noise(Y, C, kind, 0.4, sampling=sampling, random_state=0)
    T, M = res.transition_matrix, res.noise_matrix
    np.testing.assert_allclose(T.sum(1), 1.0)
    tol = _tolerance(T, N // C) if sampling == "stochastic" else np.full_like(T, 1.0 / (N // C) + 1e-12)
    assert (np.abs(M - T) <= tol).all(), np.abs(M - T).max()
    expected_rate = (1 - np.trace(T) / C)
    assert abs(res.actual_rate - expected_rate) < (0.01 if sampling == "stochastic" else 1e-4)


def test_uniform_definitions():
    T = nz.make_transition_matrix("uniform", 4, 0.4)
    np.testing.assert_allclose(np.diag(T), 0.6 + 0.1)  # kNet: the true class can be drawn
    T2 = nz.make_transition_matrix("uniform", 4, 0.4, include_true=False)
    np.testing.assert_allclose(np.diag(T2), 0.6)
    np.testing.assert_allclose(T2[0, 1:], 0.4 / 3)
    res = nz.add_label_noise(Y, C, "uniform", 0.4, include_true=False, random_state=1)
    assert res.actual_rate == pytest.approx(0.4, abs=1e-4)


def test_asymmetric_random_structure():
    T = nz.make_transition_matrix("asymmetric-random", C, 0.3, random_state=5)
    for i in range(C):
        off = np.sort(np.delete(T[i], i))
        np.testing.assert_allclose(off[-2:], [0.1, 0.2])
        assert T[i, i] == pytest.approx(0.7)
        assert (off[:-2] == 0).all()


def test_semantic_builtin_maps():
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    cmap = nz.resolve_class_map(nz.SEMANTIC_MAPS["cifar10"], classes)
    assert cmap == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    res = nz.add_label_noise(Y, C, "semantic", 0.4, class_map=cmap, random_state=0)
    M = res.noise_matrix
    assert M[9, 1] == pytest.approx(0.4, abs=1e-3) and M[0, 0] == 1.0 and M[6, 6] == 1.0
    assert res.actual_rate == pytest.approx(0.4 * 5 / 10, abs=1e-3)


def test_permute_keeps_histogram_and_fraction():
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, N)
    res = nz.add_label_noise(y, C, "permute", 0.32, random_state=0)
    np.testing.assert_array_equal(np.bincount(res.labels, minlength=C), np.bincount(y, minlength=C))
    # expected changed fraction: 0.32 * (1 - sum(prior^2))
    prior = np.bincount(y, minlength=C) / N
    assert res.actual_rate == pytest.approx(0.32 * (1 - (prior**2).sum()), abs=0.01)
    np.testing.assert_allclose(res.transition_matrix.sum(1), 1.0)


def test_user_matrix_and_validation():
    T = np.full((3, 3), 0.1) + np.eye(3) * 0.7
    y = np.repeat(np.arange(3), 1000)
    res = nz.add_label_noise(y, 3, "matrix", 0.0, transition_matrix=T, random_state=0)
    np.testing.assert_allclose(res.noise_matrix, T, atol=1e-3)
    with pytest.raises(InputError, match="row 0 sums to"):
        nz.check_transition_matrix(np.ones((3, 3)), 3)
    with pytest.raises(InputError, match="square"):
        nz.check_transition_matrix(np.ones((3, 2)), 3)
    with pytest.raises(InputError, match=r"expected \(4, 4\)"):
        nz.check_transition_matrix(np.eye(3), 4)


def test_determinism_byte_for_byte():
    a = nz.add_label_noise(Y, C, "asymmetric-random", 0.3, random_state=7)
    b = nz.add_label_noise(Y, C, "asymmetric-random", 0.3, random_state=7)
    c = nz.add_label_noise(Y, C, "asymmetric-random", 0.3, random_state=8)
    assert a.labels.tobytes() == b.labels.tobytes()
    assert a.labels.tobytes() != c.labels.tobytes()


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_bad_rates(rate):
    with pytest.raises(InputError, match=r"^noise rate .*: expected a number in \[0, 1\]") as info:
        nz.add_label_noise(Y[:10], C, "uniform", rate)
    assert info.value.param == "rate" and "--" not in str(info.value)


def test_bad_kind_and_labels():
    with pytest.raises(InputError, match="noise kind 'gaussian': unknown"):
        nz.add_label_noise(Y[:10], C, "gaussian", 0.1)
    with pytest.raises(InputError, match=r"expected integers in \[0, 3\)"):
        nz.add_label_noise(np.array([0, 5]), 3, "uniform", 0.1)
    with pytest.raises(InputError, match="maps to itself"):
        nz.resolve_class_map({"a": "a"}, ["a", "b"])
    with pytest.raises(InputError, match="CLEAN:NOISY"):
        nz.parse_class_map("cat-dog")
