"""The built-in transferability estimators, checked against their mathematical definitions.

Expected values come from the formulas (brute-force evidence maximisation, explicit traces and
log-determinants, closed-form limits), never from another implementation's numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize

import autotransfer
from autotransfer import EstimatorError, NotApplicable

FEATURE_ESTIMATORS = ["logme", "hscore", "hscore_shrinkage", "transrate", "gbc", "knn"]
SOURCE_ESTIMATORS = ["leep", "nce"]


def linear_task(rng, n, d, c, *, noise=1.0):
    """Features and class labels generated from a linear model of the features."""
    f = rng.standard_normal((n, d))
    logits = f @ rng.standard_normal((d, c)) / math.sqrt(d) * 3 + noise * rng.standard_normal((n, c))
    y = logits.argmax(1)
    y[:c] = np.arange(c)  # every class present...
    y[c : 2 * c] = np.arange(c)  # ...at least twice
    return f, y


def latent_task(rng, n, d, c):
    """Features and labels that both depend on 4 latent factors (a clear evidence maximum)."""
    latent = rng.standard_normal((n, 4))
    f = latent @ rng.standard_normal((4, d)) + 0.5 * rng.standard_normal((n, d))
    y = (latent @ rng.standard_normal((4, c)) + 0.3 * rng.standard_normal((n, c))).argmax(1)
    return f, y, latent


# --- LogME: the brute-force maximum of the Bayesian linear-model evidence ---


def log_evidence(log_alpha, log_beta, f, y):
    """L(α, β) / N with the posterior mean m and an explicit D×D log-determinant."""
    alpha, beta = math.exp(log_alpha), math.exp(log_beta)
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = np.linalg.solve(a, beta * f.T @ y)
    sign, logdet = np.linalg.slogdet(a)
    assert sign > 0
    evidence = (
        n / 2 * math.log(beta)
        + d / 2 * math.log(alpha)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * np.sum((f @ m - y) ** 2)
        - alpha / 2 * m @ m
        - logdet / 2
    )
    return evidence / n


def brute_force_logme(f, targets):
    """Per column: grid over (log α, log β), then Nelder–Mead from the best grid point; mean of maxima."""
    grid = np.linspace(-6, 10, 5)
    best = []
    for y in targets.T:
        start = max(((a, b) for a in grid for b in grid), key=lambda p, y=y: log_evidence(*p, f, y))
        res = minimize(
            lambda p, y=y: -log_evidence(p[0], p[1], f, y),
            start,
            method="Nelder-Mead",
            options={"xatol": 1e-9, "fatol": 1e-13, "maxiter": 4000},
        )
        assert np.all(np.abs(res.x) < 12), f"maximum near the search boundary at {res.x}; pick another task"
        best.append(-res.fun)
    return float(np.mean(best))


@pytest.mark.parametrize("n,d,c", [(150, 30, 4), (40, 80, 3)], ids=["N>D", "N<D"])
def test_logme_equals_brute_force_maximised_evidence(n, d, c):
    f, y, _ = latent_task(np.random.default_rng(n), n, d, c)
    assert np.bincount(y).min() >= 2
    expected = brute_force_logme(f, np.eye(c)[y])
    got = autotransfer.estimate("logme", f, y)
    assert got == pytest.approx(expected, rel=1e-4)
    assert autotransfer.get_estimator("logme").higher_is_better


@pytest.mark.parametrize("n,d", [(120, 20), (30, 60)], ids=["N>D", "N<D"])
def test_logme_regression_target_equals_brute_force(n, d):
    rng = np.random.default_rng(d)
    f, _, latent = latent_task(rng, n, d, 2)
    target = latent @ rng.standard_normal((4, 2)) + 0.5 * rng.standard_normal((n, 2))
    expected = brute_force_logme(f, target)
    assert autotransfer.estimate("logme", f, target) == pytest.approx(expected, rel=1e-4)


def test_logme_is_an_upper_bound_of_the_evidence_even_when_the_maximum_is_at_infinity():
    # A target independent of N < D features: the evidence increases towards α → ∞ (the null
    # model m = 0), where the fixed point of the public code drifts without converging.
    rng = np.random.default_rng(7)
    f = rng.standard_normal((30, 80))
    y = np.repeat([0, 1, 2], 10)
    got = autotransfer.estimate("logme", f, y)
    assert np.isfinite(got)
    targets = np.eye(3)[y]
    for la in np.linspace(-6, 10, 9):
        for lb in np.linspace(-6, 10, 9):
            bound = np.mean([log_evidence(la, lb, f, t) for t in targets.T])
            assert got >= bound - 1e-9
    null = np.mean([-0.5 * (math.log(2 * math.pi * (t @ t) / len(t)) + 1) for t in targets.T])
    assert got >= null - 1e-12


@pytest.mark.parametrize("seed,limit_wins", [(14, True), (12, False)])
def test_logme_noise_free_target_with_n_below_d_reaches_the_gaussian_process_limit(seed, limit_wins):
    # y = F w exactly with N < D. As beta -> inf the model becomes y ~ N(0, F Fᵀ / alpha), whose
    # best alpha is N / yᵀ(F Fᵀ)⁻¹y: a supremum on the boundary that no finite (alpha, beta)
    # attains and that a fixed point only creeps towards. Depending on the sample, an interior
    # maximum can beat it; LogME must return whichever is larger.
    rng = np.random.default_rng(seed)
    n, d = 25, 60
    f = rng.standard_normal((n, d))
    y = f @ rng.standard_normal((d, 1))
    kernel = f @ f.T
    alpha = n / float(y[:, 0] @ np.linalg.solve(kernel, y[:, 0]))
    limit = (-n / 2 * math.log(2 * math.pi) - np.linalg.slogdet(kernel)[1] / 2 + n / 2 * math.log(alpha) - n / 2) / n
    grid = max(log_evidence(la, lb, f, y[:, 0]) for la in np.linspace(-6, 6, 25) for lb in np.linspace(-6, 14, 41))
    got = autotransfer.estimate("logme", f, y)
    assert got >= max(limit, grid) - 1e-9
    if limit_wins:
        assert got == pytest.approx(limit, rel=1e-9)
    else:
        assert got > limit + 1e-3
        assert got == pytest.approx(grid, rel=1e-3)


@pytest.mark.parametrize("name", FEATURE_ESTIMATORS)
def test_scores_are_invariant_to_renaming_classes(name):
    f, y = linear_task(np.random.default_rng(3), 120, 16, 4)
    perm = np.array([2, 0, 3, 1])
    strings = np.array(["cat", "dog", "eel", "fox"])[y]
    base = autotransfer.estimate(name, f, y)
    assert autotransfer.estimate(name, f, perm[y]) == pytest.approx(base, rel=1e-9, abs=1e-12)
    assert autotransfer.estimate(name, f, strings) == pytest.approx(base, rel=1e-9, abs=1e-12)


# --- H-score ---


def between_class_cov(f, y):
    fc = f - f.mean(0)
    g = np.stack([fc[y == c].mean(0) for c in y])  # E[f | y] per sample
    return g.T @ g / len(f)


@pytest.mark.parametrize("n,d", [(300, 20), (30, 50)], ids=["N>D", "N<D"])
def test_hscore_equals_trace_formula(n, d):
    f, y = linear_task(np.random.default_rng(d), n, d, 5)
    fc = f - f.mean(0)
    cov = fc.T @ fc / n
    # Centred N < D data has exactly rank N-1; cut the numerically-zero eigenvalues explicitly.
    expected = np.trace(np.linalg.pinv(cov, rcond=1e-10, hermitian=True) @ between_class_cov(f, y))
    assert autotransfer.estimate("hscore", f, y) == pytest.approx(expected, rel=1e-8)


def test_hscore_shrinkage_equals_trace_formula_with_ledoit_wolf():
    from sklearn.covariance import ledoit_wolf

    f, y, _ = latent_task(np.random.default_rng(11), 80, 40, 4)
    shrunk, a = ledoit_wolf(f)
    expected = np.trace(np.linalg.inv(shrunk) @ ((1 - a) * between_class_cov(f, y)))
    assert 0 < a < 1
    assert autotransfer.estimate("hscore_shrinkage", f, y) == pytest.approx(expected, rel=1e-8)


def test_shrinkage_hscore_stays_small_for_noise_where_plain_hscore_saturates():
    rng = np.random.default_rng(5)
    c, d = 5, 100
    for n in (90, 101, 105):  # N ≈ D: the sample covariance is (nearly) singular
        y = np.arange(n) % c
        noise = rng.standard_normal((n, d))
        signal = rng.standard_normal((n, d))
        signal[:, :c] += 2 * np.eye(c)[y]
        plain = autotransfer.estimate("hscore", noise, y)
        shrunk = autotransfer.estimate("hscore_shrinkage", noise, y)
        assert 0.9 * (c - 1) <= plain <= (c - 1) + 1e-6  # pure noise scores near the maximum C-1
        assert 0 <= shrunk <= 0.1 * (c - 1)
        assert autotransfer.estimate("hscore_shrinkage", signal, y) > shrunk


@pytest.mark.parametrize("name", ["hscore", "hscore_shrinkage"])
def test_collapsed_features_score_zero_not_nan(name):
    # a collapsed source (every item mapped to the same vector, e.g. dead ReLUs) has no between-class
    # variance at all: it must rank below any source with signal, so its score is 0, never NaN
    y = np.arange(60) % 3
    assert autotransfer.estimate(name, np.full((60, 8), 0.7), y) == 0.0
    assert autotransfer.estimate(name, np.zeros((60, 8)), y) == 0.0


# --- LEEP and NCE ---


def test_leep_is_zero_for_a_perfect_head_and_minus_entropy_for_a_constant_head():
    rng = np.random.default_rng(0)
    c = 4
    y = np.repeat(np.arange(c), 25)
    perfect = np.eye(c)[y]
    constant = np.tile(rng.dirichlet(np.ones(7)), (len(y), 1))
    f = rng.standard_normal((len(y), 3))
    assert autotransfer.estimate("leep", f, y, source_probs=perfect) == pytest.approx(0.0, abs=1e-12)
    assert autotransfer.estimate("leep", f, y, source_probs=constant) == pytest.approx(math.log(1 / c), rel=1e-12)
    assert autotransfer.get_estimator("leep").higher_is_better


def test_nce_is_zero_when_target_is_a_function_of_source_label_and_minus_conditional_entropy_otherwise():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(6), size=200)
    z = probs.argmax(1)
    f = rng.standard_normal((200, 3))
    coarse = np.array([0, 1, 1, 2, 0, 2])[z]
    assert autotransfer.estimate("nce", f, coarse, source_probs=probs) == pytest.approx(0.0, abs=1e-12)

    y = np.where(rng.random(200) < 0.3, rng.integers(0, 3, 200), coarse)
    h = 0.0  # H(Y|Z) by counting
    for zv in np.unique(z):
        yz = y[z == zv]
        p = np.bincount(yz) / len(yz)
        p = p[p > 0]
        h += len(yz) / len(y) * -(p * np.log(p)).sum()
    assert autotransfer.estimate("nce", f, y, source_probs=probs) == pytest.approx(-h, rel=1e-12)


# --- TransRate ---


def test_transrate_equals_coding_rate_formula():
    rng = np.random.default_rng(2)
    f, y = linear_task(rng, 90, 12, 3)
    f = 5 * f + 3  # scale and offset are removed by the normalisation
    eps = 1e-4
    z = f - f.mean(0)
    z /= np.sqrt((z**2).sum() / len(z))

    def rate(x):
        n, d = x.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + d / (n * eps**2) * x.T @ x)[1]

    expected = rate(z) - sum((y == c).mean() * rate(z[y == c]) for c in range(3))
    assert autotransfer.estimate("transrate", f, y) == pytest.approx(expected, rel=1e-8)
    assert autotransfer.estimate("transrate", f / 7, y) == pytest.approx(expected, rel=1e-8)


def test_transrate_is_nonnegative_and_zero_when_classes_share_the_same_points():
    # Concavity of logdet gives R(Z) >= Σ (n_c/n) R(Z_c), with equality when every Z_c is the same.
    rng = np.random.default_rng(4)
    block = rng.standard_normal((20, 8))
    f = np.vstack([block, block, block])
    y = np.repeat([0, 1, 2], 20)
    assert autotransfer.estimate("transrate", f, y) == pytest.approx(0.0, abs=1e-8)
    f2, y2 = linear_task(rng, 60, 30, 3)
    assert autotransfer.estimate("transrate", f2, y2) > 0


# --- GBC and kNN ---


@pytest.mark.parametrize("covariance", ["spherical", "diagonal"])
def test_gbc_bounds_and_limits(covariance):
    from autotransfer_plugins.estimators import gbc

    rng = np.random.default_rng(6)
    c = 4
    f, y = linear_task(rng, 200, 100, c)
    value = gbc.score(f, y, covariance=covariance)
    assert -c * (c - 1) <= value <= 0
    # Well separated: class means 1000 within-class standard deviations apart.
    centres = 1000 * rng.standard_normal((c, 10))
    y_sep = np.repeat(np.arange(c), 30)
    sep = centres[y_sep] + rng.standard_normal((len(y_sep), 10))
    assert gbc.score(sep, y_sep, covariance=covariance) == pytest.approx(0.0, abs=1e-9)
    # Identical class distributions: every BC is 1, GBC = -C(C-1).
    same = np.tile(rng.standard_normal((15, 10)), (c, 1))
    y_same = np.repeat(np.arange(c), 15)
    assert gbc.score(same, y_same, covariance=covariance) == pytest.approx(-c * (c - 1), rel=1e-9)


def test_knn_is_one_on_separable_data_and_breaks_ties_by_nearest():
    from autotransfer_plugins.estimators import knn

    rng = np.random.default_rng(8)
    y = np.repeat(np.arange(5), 20)
    f = 10 * np.eye(5)[y] + 0.1 * rng.standard_normal((100, 5))
    assert autotransfer.estimate("knn", f, y) == 1.0
    # Points on the unit circle at these angles: for the sample at 0.0, the two nearest others
    # are at 0.1 (class 1) and -0.2 (class 0), a 1-1 tie that the nearer one (class 1) wins.
    angles = np.array([0.0, 0.1, -0.2, 1.5, 1.6, 3.0, 3.1])
    labels = np.array([0, 1, 0, 1, 1, 2, 2])
    pts = np.c_[np.cos(angles), np.sin(angles)]
    # By hand, sample -> its two nearest (angle: class) -> k=2 vote:
    # 0.0 -> (0.1: 1, -0.2: 0) tie -> 1, wrong;   0.1 -> (0.0: 0, -0.2: 0) -> 0, wrong;
    # -0.2 -> (0.0: 0, 0.1: 1) tie -> 0, right;   1.5 -> (1.6: 1, 0.1: 1) -> 1, right;
    # 1.6 -> (1.5: 1, 3.0: 2) tie -> 1, right;    3.0 -> (3.1: 2, 1.6: 1) tie -> 2, right;
    # 3.1 -> (3.0: 2, 1.6: 1) tie -> 2, right. Accuracy 5/7.
    assert knn.score(pts, labels, k=2) == pytest.approx(5 / 7)
    assert knn.score(pts, labels, k=2, batch_size=2) == pytest.approx(5 / 7)


# --- ranking sanity on real data ---


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    x, y = x[:600], y[:600]
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(x.shape)
    head = LogisticRegression(max_iter=500).fit(x[::2], y[::2])
    return x, y, noise, head.predict_proba(x), rng.dirichlet(np.ones(10), size=len(y))


@pytest.mark.parametrize("name", FEATURE_ESTIMATORS + SOURCE_ESTIMATORS)
def test_pixels_outrank_noise_on_digits(name, digits):
    x, y, noise, good_probs, random_probs = digits
    informative = autotransfer.estimate(name, x, y, source_probs=good_probs)
    uninformative = autotransfer.estimate(name, noise, y, source_probs=random_probs)
    assert autotransfer.get_estimator(name).higher_is_better
    assert informative > uninformative


# --- registry and input errors ---


@pytest.mark.parametrize("name", FEATURE_ESTIMATORS + SOURCE_ESTIMATORS)
def test_registered_with_metadata(name):
    est = autotransfer.get_estimator(name)
    assert est.name == name and est.description
    assert est.supports_regression == (name == "logme")
    assert ("source_probs" in est.requires) == (name in SOURCE_ESTIMATORS)


def test_nan_features_are_rejected():
    f, y = linear_task(np.random.default_rng(0), 40, 5, 2)
    f[3, 1] = np.nan
    with pytest.raises(EstimatorError, match="NaN"):
        autotransfer.estimate("logme", f, y)


def test_leep_without_source_probs_is_not_applicable():
    f, y = linear_task(np.random.default_rng(0), 40, 5, 2)
    with pytest.raises(NotApplicable, match="source"):
        autotransfer.estimate("leep", f, y)


def test_regression_target_is_not_applicable_to_classification_estimators():
    rng = np.random.default_rng(0)
    with pytest.raises(NotApplicable):
        autotransfer.estimate("hscore", rng.standard_normal((20, 3)), rng.standard_normal((20, 2)))


def test_cuda_matches_cpu_or_is_refused_clearly():
    import torch

    f, y = linear_task(np.random.default_rng(9), 200, 32, 4)
    if not torch.cuda.is_available():
        with pytest.raises(EstimatorError, match="CUDA"):
            autotransfer.estimate("logme", f, y, device="cuda")
        return
    for name in FEATURE_ESTIMATORS:
        cpu = autotransfer.estimate(name, f, y)
        assert autotransfer.estimate(name, f, y, device="cuda") == pytest.approx(cpu, rel=1e-6, abs=1e-9)
