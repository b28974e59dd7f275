"""2-D projections of pooled hidden states (UMAP, t-SNE, PCA), aligned across checkpoints.

Why aligned: UMAP and t-SNE layouts are defined only up to rotation, reflection and where clusters land, so two
checkpoints projected independently cannot be compared side by side. Each checkpoint after the first starts from
the previous checkpoint's layout (the same examples, in the same order) and is then rotated/scaled onto it by
orthogonal Procrustes; PCA, being deterministic up to sign and order, only needs the Procrustes step.

Two numbers describe how well consecutive layouts line up (both 0 for identical layouts):

- ``disparity``: scipy's Procrustes disparity, the squared distance left after the best translation, scaling and
  rotation. It measures how much the *shape* changed.
- ``displacement``: the same squared distance after translation and scaling only (no rotation): what a person
  comparing the two plots actually sees. Independent layouts are typically near 1-2, aligned ones near their
  disparity.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.linalg import orthogonal_procrustes
from scipy.spatial import procrustes

METHODS = ("umap", "tsne", "pca")
#: UMAP and t-SNE first reduce to this many principal components: it speeds up the neighbour search
#: and, on transformer hidden states, keeps the neighbourhoods (standard practice for both methods).
PCA_DIMS = 50


# ---------------------------------------------------------------------------------------------------- PCA
#: PCA fits its covariance on at most this many evenly spaced rows; every row is projected. The sampling error of
#: the components (~1/sqrt(rows), 0.2%) is invisible in a 2-D plot, and a 1M-row fit costs a quarter as much.
PCA_FIT_ROWS = 1 << 18


def pca(x: np.ndarray, k: int = 2, *, chunk_rows: int = 1 << 15, fit_rows: int | None = PCA_FIT_ROWS) -> np.ndarray:
    """Scores on the top ``k`` principal components, float32 ``[n, k]``; deterministic signs.

    Streams through one reused float32 buffer (float64 sums), so a float16 ``[1M, 384]`` input is never copied
    whole. The covariance is accumulated from the rows shifted by the first chunk's mean (which keeps float32
    products well conditioned when the mean is large, as in transformer states with outlier dimensions), over at
    most ``fit_rows`` evenly spaced rows (None: all). Each component's sign makes its largest loading positive.
    """
    import torch

    x = np.asarray(x)
    n, d = x.shape
    k = min(k, d, n)
    buffer = torch.empty(min(chunk_rows, n), d, dtype=torch.float32)

    def chunks(data):
        """Each chunk of rows as float32, in the shared buffer (valid until the next one)."""
        for start in range(0, len(data), chunk_rows):
            rows = data[start:start + chunk_rows]
            c = buffer[:len(rows)]
            c.copy_(torch.from_numpy(np.ascontiguousarray(rows)))
            yield start, c

    fit = x if not fit_rows or n <= fit_rows else x[np.linspace(0, n - 1, fit_rows).astype(np.int64)]
    shift = torch.from_numpy(np.asarray(fit[:chunk_rows], dtype=np.float64)).mean(0).float()
    gram = np.zeros((d, d))
    total = np.zeros(d)
    for _, c in chunks(fit):
        c.sub_(shift)
        gram += (c.T @ c).numpy()
        total += c.sum(0).numpy()
    offset = total / max(len(fit), 1)
    cov = gram / max(len(fit), 1) - np.outer(offset, offset)
    _, vectors = np.linalg.eigh(cov)
    components = vectors[:, ::-1][:, :k]
    signs = np.sign(components[np.abs(components).argmax(0), np.arange(k)])
    components = torch.from_numpy((components * np.where(signs == 0, 1, signs)).astype(np.float32))
    out = np.empty((n, k), np.float32)
    row_sum = np.zeros(d)
    for start, c in chunks(x):  # project every row; centre with the exact mean of all rows afterwards
        out[start:start + len(c)] = (c @ components).numpy()
        row_sum += c.sum(0).numpy()
    out -= (row_sum / max(n, 1)).astype(np.float32) @ components.numpy()
    return out


def _reduce(x: np.ndarray, dims: int | None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if dims and x.shape[1] > dims and x.shape[0] > dims:
        return pca(x, dims)
    return x


# ---------------------------------------------------------------------------------------------------- UMAP / t-SNE
def umap_2d(x: np.ndarray, *, init: np.ndarray | None = None, seed: int = 0, n_neighbors: int = 15,
            min_dist: float = 0.1, pca_dims: int | None = PCA_DIMS, n_epochs: int | None = None) -> np.ndarray:
    """UMAP layout ``[n, 2]``; ``init`` (a previous layout of the same rows) starts it there. Seeded: reproducible.

    A warm start needs fewer epochs: with ``init`` and no ``n_epochs``, half of UMAP's default (250 up to 10k rows,
    100 above) is used, which keeps the layout as close to the previous one as the full count (measured) in half
    the time.
    """
    import umap

    data = _reduce(x, pca_dims)
    if n_epochs is None and init is not None:
        n_epochs = 250 if len(data) <= 10_000 else 100
    n_neighbors = max(2, min(n_neighbors, len(data) - 1))
    start = "spectral" if init is None else np.asarray(init, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", message=".*not fully connected.*")
        model = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, init=start, random_state=seed,
                          n_epochs=n_epochs, transform_seed=seed)
        return np.asarray(model.fit_transform(data), dtype=np.float32)


def tsne_2d(x: np.ndarray, *, init: np.ndarray | None = None, seed: int = 0, perplexity: float = 30.0,
            pca_dims: int | None = PCA_DIMS, n_jobs: int = 1) -> np.ndarray:
    """openTSNE layout ``[n, 2]``; seeded and single-threaded by default, so reproducible.

    A warm start from ``init`` (a previous layout of the same rows) is rescaled as openTSNE recommends (std 1e-4)
    and skips the early-exaggeration phase, whose job is to find the global arrangement ``init`` already has:
    with it, consecutive layouts rearranged almost as much as independent ones (measured).
    """
    from openTSNE import TSNE
    from openTSNE.initialization import rescale

    data = _reduce(x, pca_dims).astype(np.float64)
    perplexity = min(perplexity, max(1.0, (len(data) - 1) / 3))
    start = "pca" if init is None else rescale(np.asarray(init, dtype=np.float64))
    extra = {} if init is None else {"early_exaggeration_iter": 0}
    embedding = TSNE(n_components=2, perplexity=perplexity, initialization=start, random_state=seed,
                     n_jobs=n_jobs, verbose=False, **extra).fit(data)
    return np.asarray(embedding, dtype=np.float32)


def project(x: np.ndarray, method: str = "umap", *, init: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """A 2-D layout of ``x`` by ``method`` (``umap``, ``tsne`` or ``pca``); ``init`` is ignored by PCA."""
    if method == "umap":
        return umap_2d(x, init=init, seed=seed)
    if method == "tsne":
        return tsne_2d(x, init=init, seed=seed)
    if method == "pca":
        return pca(x, 2)
    raise ValueError(f"projection method {method!r}: expected one of {METHODS}")


# ---------------------------------------------------------------------------------------------------- alignment
def procrustes_align(layout: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``layout`` rotated (or reflected), uniformly scaled and shifted to lie as close as possible to ``reference``."""
    a = np.asarray(layout, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    a_mean, b_mean = a.mean(0), b.mean(0)
    a0, b0 = a - a_mean, b - b_mean
    rotation, singular_sum = orthogonal_procrustes(a0, b0)
    norm = (a0 ** 2).sum()
    scale = singular_sum / norm if norm > 0 else 1.0
    return (a0 @ rotation * scale + b_mean).astype(np.float32)


def disparity(a: np.ndarray, b: np.ndarray) -> float:
    """Procrustes disparity (scipy): the shape difference left after the best translation, scale and rotation."""
    return float(procrustes(np.asarray(a, np.float64), np.asarray(b, np.float64))[2])


def displacement(a: np.ndarray, b: np.ndarray) -> float:
    """Squared distance between the layouts after centring and scaling to unit norm, *without* rotation."""
    def standard(m):
        m = np.asarray(m, np.float64) - np.mean(m, 0)
        return m / (np.linalg.norm(m) or 1.0)

    return float(((standard(a) - standard(b)) ** 2).sum())


@dataclass(frozen=True)
class Layout:
    """One checkpoint's projection and how it relates to the previous one."""

    xy: np.ndarray
    disparity: float | None      # vs the previous checkpoint's layout (None for the first)
    displacement: float | None


def project_next(x: np.ndarray, method: str, previous: np.ndarray | None = None, *, aligned: bool = True,
                 seed: int = 0) -> Layout:
    """Project ``x``; with ``aligned`` and a ``previous`` layout (same rows), start from it and Procrustes onto it."""
    init = previous if (aligned and previous is not None and method != "pca") else None
    xy = project(x, method, init=init, seed=seed)
    if previous is None:
        return Layout(xy, None, None)
    if aligned:
        xy = procrustes_align(xy, previous)
    return Layout(xy, disparity(xy, previous), displacement(xy, previous))


def project_sequence(xs: list[np.ndarray], method: str = "umap", *, aligned: bool = True,
                     seed: int = 0) -> list[Layout]:
    """Project each checkpoint's states in order, each aligned to the one before (when ``aligned``)."""
    out: list[Layout] = []
    for x in xs:
        out.append(project_next(x, method, out[-1].xy if out else None, aligned=aligned, seed=seed))
    return out
