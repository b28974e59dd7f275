"""Selection and filter masks over millions of points, as small pure functions.

Brushing must answer in tens of milliseconds at 10M rows, so the point tests are numba loops (one pass, no
temporaries, parallel over rows); ``filter_mask`` is vectorised numpy. None of this imports panel or bokeh.
"""

from __future__ import annotations

from typing import Mapping, Sequence, Union

import numba
import numpy as np

#: A filter is a closed range ``(lo, hi)`` for a continuous column, or a collection of allowed codes for a
#: categorical one.
Filter = Union[tuple, frozenset, set, list]


#: Below this many points the serial kernels win (starting the thread pool costs more than it saves).
PARALLEL_MIN = 200_000


def _box(x, y, x0, y0, x1, y1, out):
    for i in numba.prange(x.shape[0]):
        xi = x[i]
        yi = y[i]
        out[i] = (xi >= x0) & (xi <= x1) & (yi >= y0) & (yi <= y1)


_box_serial = numba.njit(cache=True, nogil=True)(_box)
_box_parallel = numba.njit(parallel=True, cache=True, nogil=True)(_box)


def box_mask(x: np.ndarray, y: np.ndarray, bounds: Sequence[float]) -> np.ndarray:
    """Points inside the closed box ``bounds = (left, bottom, right, top)`` (as BoundsXY reports it)."""
    x0, y0, x1, y1 = (float(b) for b in bounds)
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    out = np.empty(len(x), dtype=np.bool_)
    (_box_parallel if len(x) >= PARALLEL_MIN else _box_serial)(x, y, x0, y0, x1, y1, out)
    return out


def _lasso(x, y, ax, ay, dxdy, band_start, band_edges, x0, y0, x1, y1, band_h, out):
    nbands = band_start.shape[0] - 1
    for i in numba.prange(x.shape[0]):
        xi = x[i]
        yi = y[i]
        if not ((xi >= x0) & (xi <= x1) & (yi >= y0) & (yi <= y1)):  # outside the polygon's bounding box
            out[i] = False
            continue
        b = int((yi - y0) / band_h)
        b = min(max(b, 0), nbands - 1)
        inside = False
        for k in range(band_start[b], band_start[b + 1]):  # only edges spanning this point's band
            e = band_edges[k]
            # even-odd rule: does a ray going right from the point cross edge e?
            if (ay[e] > yi) != (ay[e + 1] > yi):
                if xi < ax[e] + (yi - ay[e]) * dxdy[e]:
                    inside = not inside
        out[i] = inside


_lasso_serial = numba.njit(cache=True, nogil=True)(_lasso)
_lasso_parallel = numba.njit(parallel=True, cache=True, nogil=True)(_lasso)


def _edge_bands(py: np.ndarray, y0: float, band_h: float, nbands: int) -> tuple[np.ndarray, np.ndarray]:
    """For each horizontal band, the edges whose y-span overlaps it (CSR: starts, edge ids)."""
    lo = np.minimum(py[:-1], py[1:])
    hi = np.maximum(py[:-1], py[1:])
    first = np.clip(((lo - y0) / band_h).astype(np.int64), 0, nbands - 1)
    last = np.clip(((hi - y0) / band_h).astype(np.int64), 0, nbands - 1)
    counts = last - first + 1
    edges = np.repeat(np.arange(len(lo)), counts)
    bands = np.repeat(first, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    order = np.argsort(bands, kind="stable")
    start = np.zeros(nbands + 1, dtype=np.int64)
    np.cumsum(np.bincount(bands, minlength=nbands), out=start[1:])
    return start, edges[order].astype(np.int64)


def lasso_mask(x: np.ndarray, y: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Points inside ``polygon`` (``[k, 2]`` vertices, as the Lasso stream's ``geometry``), even-odd rule.

    Edges are bucketed into horizontal bands, so each point tests only the few edges at its height: a lasso of
    hundreds of vertices costs about what a triangle does.
    """
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    out = np.empty(len(x), dtype=np.bool_)
    if len(poly) < 3:
        out[:] = False
        return out
    closed = np.vstack([poly, poly[:1]])  # edge e joins vertex e and e + 1
    ax, ay = np.ascontiguousarray(closed[:, 0]), np.ascontiguousarray(closed[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        dxdy = np.diff(ax) / np.diff(ay)  # horizontal edges never pass the crossing test, inf there is harmless
    x0, x1, y0, y1 = ax.min(), ax.max(), ay.min(), ay.max()
    nbands = int(min(4096, max(1, 4 * len(poly))))
    band_h = (y1 - y0) / nbands or 1.0
    start, edges = _edge_bands(ay, y0, band_h, nbands)
    kernel = _lasso_parallel if len(x) >= PARALLEL_MIN else _lasso_serial
    kernel(x, y, ax, ay, dxdy, start, edges, x0, y0, x1, y1, band_h, out)
    return out


def filter_mask(columns: Mapping[str, np.ndarray], filters: Mapping[str, Filter]) -> np.ndarray | None:
    """Rows passing every filter, or ``None`` when there is no filter (meaning: all rows).

    A ``(lo, hi)`` tuple keeps ``lo <= v <= hi`` (NaN never passes); a set/list/frozenset keeps rows whose
    value is one of its members (category codes for categorical columns).
    """
    mask = None
    for name, spec in filters.items():
        values = columns[name]
        if isinstance(spec, tuple):
            lo, hi = spec
            keep = (values >= lo) & (values <= hi)
        else:
            allowed = np.fromiter((int(v) for v in spec), dtype=np.int64)
            keep = _isin_small_ints(values, allowed)
        mask = keep if mask is None else np.logical_and(mask, keep, out=mask)
    return mask


def _isin_small_ints(values: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``np.isin`` for category codes via a lookup table (one gather instead of a sort)."""
    if values.dtype.kind == "b":
        values = values.view(np.int8)
    if values.dtype.kind not in "iu":
        return np.isin(values, allowed)
    lo = min(int(values.min(initial=0)), int(allowed.min(initial=0)))
    hi = max(int(values.max(initial=0)), int(allowed.max(initial=0)))
    lut = np.zeros(hi - lo + 1, dtype=np.bool_)
    lut[allowed - lo] = True
    return lut[values.astype(np.intp, copy=False) - lo] if lo else lut[values]


def rows_mask(rows: np.ndarray, n: int) -> np.ndarray:
    """The boolean mask of ``n`` rows that is True at ``rows`` (ids, e.g. a text search's matches)."""
    out = np.zeros(n, dtype=np.bool_)
    out[np.asarray(rows, dtype=np.int64)] = True
    return out


def combine(filtered: np.ndarray | None, selection: np.ndarray | None) -> np.ndarray | None:
    """The one mask every view shows: filters AND selection; ``None`` when neither is set (all rows)."""
    if filtered is None:
        return selection
    if selection is None:
        return filtered
    return np.logical_and(filtered, selection)


def count(mask: np.ndarray | None, n: int) -> int:
    return n if mask is None else int(np.count_nonzero(mask))


def nearest_row(x: np.ndarray, y: np.ndarray, point: Sequence[float], radius: Sequence[float],
                among: np.ndarray | None = None) -> int | None:
    """The row nearest ``point`` within the ellipse of half-axes ``radius = (rx, ry)`` (data units of a few
    pixels, so distance is measured as the eye sees it on a plot whose axes differ in scale), among the rows where
    ``among`` is True (None: all); None when no such row is that close. Ties go to the lowest row."""
    px, py = float(point[0]), float(point[1])
    rx, ry = abs(float(radius[0])), abs(float(radius[1]))
    if not (rx > 0 and ry > 0):
        raise ValueError(f"radius: expected two positive half-axes, got {tuple(radius)}")
    near = box_mask(x, y, (px - rx, py - ry, px + rx, py + ry))  # one parallel pass; the rest touches few rows
    if among is not None:
        near &= among
    rows = np.flatnonzero(near)
    if not len(rows):
        return None
    distance = ((x[rows] - px) / rx) ** 2 + ((y[rows] - py) / ry) ** 2
    best = int(np.argmin(distance))
    return int(rows[best]) if distance[best] <= 1.0 else None
