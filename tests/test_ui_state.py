"""Explorer logic without a page: masks against brute force, the shared column cache, the session state."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from ui_fixtures import *  # noqa: F403

from t3vis.analysis.datamaps import data_map, datamap_columns
from t3vis.errors import StoreError
from t3vis.store import Run, RunWriter
from t3vis.ui import masks
from t3vis.ui.data import PlotSpec, run_data
from t3vis.ui.order import page_order, sort_keys
from t3vis.ui.runs import app_runs_dir, default_run, list_runs, resolve_run
from t3vis.ui.state import ExplorerState


def points(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)


def star(k=60, r=1.2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 2 * np.pi, k))
    rr = r * rng.uniform(0.3, 1.0, k)  # a concave, irregular polygon
    return np.c_[rr * np.cos(t), rr * np.sin(t)]


def even_odd(px, py, poly):
    """Textbook point-in-polygon, one point at a time (the slow reference)."""
    inside = False
    j = len(poly) - 1
    for k in range(len(poly)):
        (xk, yk), (xj, yj) = poly[k], poly[j]
        if (yk > py) != (yj > py) and px < xk + (py - yk) * (xj - xk) / (yj - yk):
            inside = not inside
        j = k
    return inside


# ---------------------------------------------------------------------- masks
@pytest.mark.parametrize("bounds", [(-0.5, -0.2, 0.7, 1.1), (0.7, 1.1, -0.5, -0.2), (5, 5, 6, 6)])
def test_box_mask_matches_numpy(bounds):
    x, y = points(5000)
    l, b, r, t = bounds
    expect = (x >= min(l, r)) & (x <= max(l, r)) & (y >= min(b, t)) & (y <= max(b, t))
    np.testing.assert_array_equal(masks.box_mask(x, y, bounds), expect)


def test_box_mask_parallel_kernel_agrees():
    x, y = points(masks.PARALLEL_MIN + 17, seed=4)
    bounds = (-0.3, -1.0, 0.9, 0.4)
    expect = (x >= -0.3) & (x <= 0.9) & (y >= -1.0) & (y <= 0.4)
    np.testing.assert_array_equal(masks.box_mask(x, y, bounds), expect)


@pytest.mark.parametrize("n", [3000, masks.PARALLEL_MIN + 5])
def test_nearest_row_matches_a_brute_force_scan(n):
    x, y = points(n, seed=6)
    rng = np.random.default_rng(7)
    among = rng.random(n) < 0.5
    radius = (0.02, 0.05)  # the axes differ in scale, as a plot's do
    for px, py in rng.uniform(-1, 1, (40, 2)):
        d = ((x - px) / radius[0]) ** 2 + ((y - py) / radius[1]) ** 2
        for allowed in (None, among):
            dd = d if allowed is None else np.where(allowed, d, np.inf)
            expect = int(np.argmin(dd)) if dd.min() <= 1 else None
            assert masks.nearest_row(x, y, (px, py), radius, allowed) == expect
    with pytest.raises(ValueError, match="radius"):
        masks.nearest_row(x, y, (0, 0), (0, 1))


def test_lasso_mask_matches_matplotlib_and_textbook_loop():
    x, y = points(4000, seed=1)
    poly = star()
    got = masks.lasso_mask(x, y, poly)
    np.testing.assert_array_equal(got, MplPath(poly).contains_points(np.c_[x, y]))
    brute = np.array([even_odd(float(a), float(b), poly) for a, b in zip(x[:500], y[:500])])
    np.testing.assert_array_equal(got[:500], brute)
    assert 0 < got.sum() < len(x)


def test_lasso_mask_parallel_many_vertices_and_horizontal_edges():
    x, y = points(masks.PARALLEL_MIN + 3, seed=2)
    poly = np.vstack([star(k=400, seed=5), [[1.5, 1.5], [-1.5, 1.5]]])  # two horizontal-ish closing edges
    poly = np.vstack([poly, [[-1.5, 1.5]]])  # a repeated vertex: a zero-length edge
    expect = MplPath(poly).contains_points(np.c_[x, y])
    got = masks.lasso_mask(x, y, poly)
    assert (got != expect).sum() <= 2  # boundary points may differ by definition; random floats hit none
    assert got.sum() > 1000


def test_lasso_needs_three_vertices():
    x, y = points(100)
    assert not masks.lasso_mask(x, y, np.array([[0, 0], [1, 1]])).any()


def test_filter_mask_ranges_and_categories_against_brute_force():
    rng = np.random.default_rng(0)
    loss = rng.exponential(size=3000).astype(np.float32)
    loss[::97] = np.nan
    label = rng.integers(0, 5, 3000).astype(np.int16)
    flag = rng.random(3000) < 0.1
    got = masks.filter_mask({"loss": loss, "label": label, "flag": flag.view(np.int8)},
                            {"loss": (0.2, 1.5), "label": frozenset({1, 3}), "flag": frozenset({1})})
    expect = (loss >= 0.2) & (loss <= 1.5) & np.isin(label, [1, 3]) & flag
    np.testing.assert_array_equal(got, expect)
    assert masks.filter_mask({}, {}) is None


def test_combine_and_count():
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    np.testing.assert_array_equal(masks.combine(a, b), [True, False, False, False])
    assert masks.combine(None, b) is b and masks.combine(a, None) is a and masks.combine(None, None) is None
    assert masks.count(None, 7) == 7 and masks.count(a, 4) == 2


# ---------------------------------------------------------------------- paging
@pytest.mark.parametrize("ascending", [True, False])
def test_page_order_matches_a_full_sort(ascending):
    rng = np.random.default_rng(1)
    values = rng.integers(0, 20, 5000).astype(np.float32)  # many ties
    values[::50] = np.nan
    rows = np.sort(rng.choice(5000, 1200, replace=False))
    v = values[rows].astype(np.float64)
    key = np.where(np.isnan(v), np.inf, v if ascending else -v)
    reference = rows[np.lexsort((rows, key))]
    for start in (0, 20, 600, 1190):
        np.testing.assert_array_equal(page_order(values, rows, start, start + 20, ascending),
                                      reference[start:start + 20])
    assert len(page_order(values, rows, 1200, 1220)) == 0
    np.testing.assert_array_equal(page_order(None, rows, 40, 60), rows[40:60])


def test_sort_keys_order_negative_floats_and_rows():
    values = np.array([0.5, -2.0, -0.0, 3.0, -2.0, np.nan], dtype=np.float32)
    rows = np.arange(6)
    assert list(np.argsort(sort_keys(values, rows))) == [1, 4, 2, 0, 3, 5]


# ---------------------------------------------------------------------- shared cache
def test_run_data_is_shared_read_only_and_derived_once(small_run):
    data = run_data(small_run)
    assert run_data(str(small_run)) is data  # one per process, whoever asks
    conf = data.values("confidence")
    assert data.values("confidence") is conf
    with pytest.raises(ValueError):
        conf[0] = 1.0  # never mutated by a session
    run = Run(small_run)
    dyn = run.dynamics()
    dm = data_map(dyn.gold_prob, dyn.pred, run.column("label"))
    np.testing.assert_allclose(conf, dm.confidence)
    np.testing.assert_allclose(data.values("variability"), dm.variability)
    np.testing.assert_allclose(data.values("correctness"), dm.correctness)
    expect = datamap_columns(dyn, run.column("label"))["mislabel_score"]  # the library's score, exactly
    np.testing.assert_array_equal(data.values("mislabel_score"), expect)
    x, y = data.xy(PlotSpec("projection", run.checkpoints[-1], "umap", 2))
    xy = run.checkpoint(run.checkpoints[-1]).projection("umap", 2)
    np.testing.assert_array_equal(np.c_[x, y], xy)
    assert not x.flags.writeable
    frame = data.frame(PlotSpec.datamap(), "label")
    assert np.shares_memory(frame["x"].to_numpy(), data.values("variability"))  # no per-plot copy


def test_run_data_reloads_when_run_changes(tmp_path):
    synth_run(tmp_path / "r", 300, checkpoints=2, num_layers=2, num_heads=2, hidden_size=4)
    before = run_data(tmp_path / "r")
    RunWriter(tmp_path / "r").write_epoch(9, gold_prob=np.full(300, 0.5), pred=np.zeros(300), loss=np.ones(300))
    after = run_data(tmp_path / "r")
    assert after is not before
    assert after.values("variability").shape == (300,)


# ---------------------------------------------------------------------- state
def test_state_defaults_and_brushing(small_run):
    state = ExplorerState(small_run)
    assert state.checkpoint == state.data.checkpoints[-1] and state.method == "umap" and state.layer == 2
    assert state.color_by == "label" and state.n_selected == state.n_total == SMALL_N  # noqa: F405
    spec = state.spec("a")
    x, y = state.data.xy(spec)
    state.select_box(spec, (-1.0, -2.0, 3.0, 1.0))
    expect = (x >= -1) & (x <= 3) & (y >= -2) & (y <= 1)
    np.testing.assert_array_equal(state.mask, expect)
    assert state.n_selected == expect.sum() and state.has_selection
    state.clear_selection()
    assert state.mask is None and state.n_selected == SMALL_N  # noqa: F405


def test_filters_combine_with_selection(small_run):
    state = ExplorerState(small_run)
    spec = state.spec("datamap")
    x, y = state.data.xy(spec)
    poly = np.array([[0.0, 0.0], [0.3, 0.0], [0.3, 1.0], [0.0, 0.6]])
    state.select_lasso(spec, poly)
    state.set_filter("label", ["sport", "tech"])
    state.set_filter("loss", (0.1, 2.0))
    labels = state.data.values("label")
    loss = state.data.values("loss", state.checkpoint)
    filtered = np.isin(labels, [3, 4]) & (loss >= 0.1) & (loss <= 2.0)
    expect = filtered & MplPath(poly).contains_points(np.c_[x, y])
    np.testing.assert_array_equal(state.filtered, filtered)
    np.testing.assert_array_equal(state.mask, expect)
    assert (state.n_filtered, state.n_selected) == (filtered.sum(), expect.sum())
    np.testing.assert_array_equal(state.rows(), np.flatnonzero(expect))
    # loss is per checkpoint: another checkpoint re-filters
    state.checkpoint = state.data.checkpoints[0]
    loss0 = state.data.values("loss", state.checkpoint)
    np.testing.assert_array_equal(state.filtered, np.isin(labels, [3, 4]) & (loss0 >= 0.1) & (loss0 <= 2.0))
    with pytest.raises(StoreError, match="unknown categories"):
        state.set_filter("label", ["cooking"])
    state.set_filter("label", None)
    state.set_filter("loss", None)
    assert state.filtered is None and state.n_filtered == SMALL_N  # noqa: F405


def test_method_and_layer_follow_the_checkpoint(small_run):
    state = ExplorerState(small_run)
    state.method = "pca"
    assert state.method == "pca" and state.layer in state.param.layer.objects
    assert state.param.method.objects == ["pca", "umap"]
    assert state.spec("a") == PlotSpec("projection", state.checkpoint, "pca", state.layer)


def test_opening_another_run_resets_the_choices_even_with_selects_linked(small_run, tmp_path):
    """A run opened in place (a notebook) gets its own defaults, as a fresh page of it would, though the sidebar's
    selects, linked to the state, see each choice's new options before its new value (panel#1963)."""
    import panel_material_ui as pmui

    from t3vis.store.synth import synth_run

    synth_run(tmp_path / "six", 300, checkpoints=3, num_layers=6, num_heads=2, hidden_size=4, seed=2)
    fresh = ExplorerState(tmp_path / "six")
    state = ExplorerState(small_run)
    selects = {name: pmui.Select.from_param(state.param[name]) for name in ("checkpoint", "method", "layer")}
    for select in selects.values():
        select.get_root()  # a rendered select processes its option changes (as on a page)
    state.method = "pca"
    state.open(str(tmp_path / "six"))
    expected = {name: getattr(fresh, name) for name in ("checkpoint", "method", "layer")}
    assert expected["method"] == "umap" and expected["layer"] == 6
    assert {name: getattr(state, name) for name in expected} == expected
    assert {name: select.value for name, select in selects.items()} == expected


def test_bare_run_opens_and_says_what_is_missing(runs_dir):
    state = ExplorerState(runs_dir / "bare")
    assert state.spec("a") is None and state.spec("datamap") is None
    assert "t3vis project" in state.message and "dynamics" in state.message
    assert "loss" in state.data.attributes and "confidence" not in state.data.attributes
    state.set_filter("loss", (0.0, 0.5))
    assert 0 < state.n_filtered < 500


def test_bad_selection_shape_is_refused(small_run):
    state = ExplorerState(small_run)
    with pytest.raises(ValueError, match="boolean mask"):
        state.selection = np.ones(3, dtype=bool)


# ---------------------------------------------------------------------- runs directory
def test_runs_directory_listing_and_refusals(broken_runs_dir, monkeypatch):
    assert list_runs(broken_runs_dir) == ["corrupt", "empty", "future", "good"]
    assert default_run(broken_runs_dir) in ("future", "good")  # only dirs with a store are candidates
    assert resolve_run(broken_runs_dir, "good") == (broken_runs_dir / "good").resolve()
    for bad in ("../etc", "/etc", "..", ".", "", "good/../../x"):
        with pytest.raises(StoreError):
            resolve_run(broken_runs_dir, bad)
    assert app_runs_dir(["--runs-dir", str(broken_runs_dir)]) == broken_runs_dir.resolve()
    monkeypatch.setenv("T3VIS_RUNS_DIR", str(broken_runs_dir / "good"))
    assert app_runs_dir([]) == (broken_runs_dir / "good").resolve()


def test_state_saliency_methods_are_the_library_methods():
    from t3vis.analysis.saliency import METHODS
    from t3vis.ui.state import SALIENCY_METHODS

    assert list(SALIENCY_METHODS) == list(METHODS)


def test_counts_say_whether_anything_is_brushed(small_run):
    from t3vis.ui.explorer import counts_text

    state = ExplorerState(small_run)
    n = state.n_total
    assert counts_text(state) == f"Nothing brushed (drag on a plot) · **{n:,}** examples"
    state.set_filter("label", [state.data.attribute("label").categories[0]])
    assert counts_text(state) == f"Nothing brushed · **{state.n_filtered:,}** after filters · {n:,} examples"
    state.selection = np.arange(n) < 100
    assert counts_text(state) == (f"**{state.n_selected:,}** selected · {state.n_filtered:,} after filters · "
                                   f"{n:,} examples")
