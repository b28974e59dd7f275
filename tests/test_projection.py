"""Projections: PCA against scikit-learn, Procrustes against known transforms, alignment across checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from t3vis.analysis.projection import (
    disparity,
    displacement,
    pca,
    procrustes_align,
    project,
    project_sequence,
)


def clustered(n=400, d=24, k=4, seed=0, drift=0.0, base_seed=0):
    """Clusters in ``d`` dims; ``drift`` moves every point a little (a later checkpoint of the same examples)."""
    rng = np.random.default_rng(base_seed)
    centers = rng.normal(0, 4, (k, d))
    labels = rng.integers(0, k, n)
    x = centers[labels] + rng.normal(0, 1, (n, d))
    if drift:
        x = x + np.random.default_rng(seed).normal(0, drift, (n, d))
    return x.astype(np.float32), labels


def rotation(theta):
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def test_pca_matches_scikit_learn_up_to_sign():
    x, _ = clustered(2000, 32)
    ours = pca(x, 3, chunk_rows=300)  # several chunks: the streamed covariance must equal the one-shot one
    ref = PCA(3, svd_solver="full").fit_transform(x.astype(np.float64))
    signs = np.sign((ours * ref).sum(0))
    np.testing.assert_allclose(ours, ref * signs, rtol=1e-3, atol=1e-3)


def test_pca_fitted_on_a_row_sample_projects_like_the_full_fit():
    rng = np.random.default_rng(0)  # well separated variances (10, 6, then 1): components are well defined
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    x = ((rng.normal(size=(20_000, 16)) * np.r_[10, 6, np.ones(14)]) @ basis + 5).astype(np.float32)
    full = pca(x, 2, fit_rows=None)
    sampled = pca(x, 2, fit_rows=2_000, chunk_rows=700)
    # the same plane, up to a small rotation within it (10 vs 6: the sample resolves the axes to ~1 degree)
    np.testing.assert_allclose(procrustes_align(sampled, full), full, atol=0.02 * np.abs(full).max())
    assert abs((sampled[:, 0] * full[:, 0]).sum() / np.linalg.norm(sampled[:, 0]) / np.linalg.norm(full[:, 0])) > 0.999
    np.testing.assert_allclose(sampled.mean(0), 0, atol=1e-3)  # centred with the mean of every row


def test_pca_is_deterministic_and_reads_float16():
    x, _ = clustered(1000, 16)
    a = pca(x.astype(np.float16), 2)
    b = pca(x.astype(np.float16)[::-1], 2)[::-1]  # row order does not flip a sign
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert a.dtype == np.float32 and a.shape == (1000, 2)


def test_procrustes_align_undoes_rotation_reflection_scale_and_shift():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(200, 2))
    moved = (ref @ rotation(1.1) @ np.diag([1, -1])) * 3.5 + np.array([10.0, -4.0])
    np.testing.assert_allclose(procrustes_align(moved, ref), ref, atol=1e-5)
    assert disparity(moved, ref) < 1e-10
    assert displacement(moved, ref) > 0.5  # what a viewer would see without alignment
    assert displacement(procrustes_align(moved, ref), ref) < 1e-10


def test_displacement_counts_rotation_but_disparity_does_not():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 2)) * [3, 1]
    b = a @ rotation(np.pi / 2)
    assert disparity(a, b) == pytest.approx(0, abs=1e-10)
    # a quarter turn makes every centred point orthogonal to where it was: |a - b|^2 / |a|^2 = 2 exactly
    assert displacement(a, b) == pytest.approx(2.0, abs=1e-9)
    assert displacement(a, a * 5 + 1) == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_aligned_layouts_move_less_than_independent_ones(method):
    """Checkpoints of the same examples whose classes separate as training goes on (as in fine-tuning): aligned
    layouts change little from one checkpoint to the next, independent ones rearrange."""
    rng = np.random.default_rng(0)
    n, d, k = 300, 24, 5
    labels = rng.integers(0, k, n)
    base, centers = rng.normal(0, 1, (n, d)), rng.normal(0, 1, (k, d))
    xs = [(base + (0.5 + 0.6 * c) * centers[labels] + rng.normal(0, 0.3, (n, d))).astype(np.float32)
          for c in range(3)]
    aligned = project_sequence(xs, method, aligned=True, seed=0)
    independent = project_sequence(xs, method, aligned=False, seed=0)
    assert aligned[0].disparity is None and aligned[1].disparity is not None
    for a, i in zip(aligned[1:], independent[1:]):
        assert a.displacement < i.displacement
        assert a.disparity < i.disparity
    assert all(layout.xy.shape == (300, 2) and layout.xy.dtype == np.float32 for layout in aligned)


@pytest.mark.parametrize("method", ["umap", "tsne", "pca"])
def test_projections_are_reproducible_with_a_seed(method):
    x, labels = clustered(250, 16)
    a = project(x, method, seed=3)
    b = project(x, method, seed=3)
    np.testing.assert_array_equal(a, b)
    # and they keep the clusters: each point's nearest neighbour in 2-D mostly shares its cluster
    d = ((a[:, None] - a[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).mean() > 0.9


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="umap"):
        project(np.zeros((10, 3)), "isomap")
