"""Nearest neighbours: the stored kNN graph and ``Checkpoint.neighbours`` against exact cosine search, recall of the
graph walk at 50k rows, the pipeline step's resume, nothing pickled, and the explorer's "similar" action."""

from __future__ import annotations

import os
import time

import holoviews as hv
import numpy as np
import pytest

from pipelines import dask_client, run_neighbours
from pipelines.neighbours import unit_of
from t3vis.analysis.neighbours import build_graph, drop_self
from t3vis.errors import StoreError
from t3vis.store import Run, RunWriter, knn, schema, validate
from t3vis.store.synth import synth_run
from ui_fixtures import chromium, runs_dir, serve, small_page  # noqa: F401 (fixtures)

N, LAYER = 400, 6


def brute_force(x: np.ndarray, query: np.ndarray, k: int, exclude: int | None = None):
    """Cosine top-k in float64, the reference."""
    x = x.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ (query / np.linalg.norm(query))
    if exclude is not None:
        sims[exclude] = -np.inf
    order = np.argsort(-sims, kind="stable")[:k]
    return order, sims[order]


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("nn") / "run"
    synth_run(path, N, checkpoints=2, hidden_size=16, seed=3)
    return str(path)


@pytest.fixture(scope="module")
def client():
    with dask_client(n_workers=1, dashboard=False) as c:  # a real scheduler and worker process
        yield c


def check_exact(ckpt, hidden):
    for row in (0, 7, N - 1):
        ids, sims = ckpt.neighbours(row, k=20, layer=LAYER)
        ref_ids, ref_sims = brute_force(hidden, hidden[row].astype(np.float64), 20, exclude=row)
        assert row not in ids
        np.testing.assert_allclose(sims, ref_sims, atol=2e-3)  # float16 similarities in the stored graph
        assert len(set(ids) ^ set(ref_ids)) <= 2  # a tie at float16 precision may swap the 20th
    vector = hidden[:10].astype(np.float32).mean(axis=0)
    ids, sims = ckpt.neighbours(vector, k=15, layer=LAYER)
    ref_ids, ref_sims = brute_force(hidden, vector.astype(np.float64), 15)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)


def test_neighbours_equal_exact_cosine_top_k_with_and_without_the_index(run_path, client):
    run = Run(run_path)
    ckpt = run.checkpoint(run.checkpoints[-1])
    hidden = ckpt.hidden(LAYER, "cls")
    assert ckpt.neighbours_attrs(LAYER) is None
    check_exact(ckpt, hidden)  # exact fallback: no index stored
    summary = run_neighbours(client, run_path, progress=False)
    assert summary["done"] == 2 * len(summary["layers"]) and summary["skipped"] == 0
    ckpt = Run(run_path).checkpoint(run.checkpoints[-1])
    assert ckpt.neighbours_attrs(LAYER)["method"] == "exact"
    group = ckpt.neighbours_group(LAYER)
    assert group["ids"].dtype == np.int32 and group["sims"].dtype == np.float16 and group["ids"].shape == (N, 32)
    check_exact(ckpt, hidden)  # from the stored graph
    assert list(validate(run_path)) == []
    with pytest.raises(StoreError, match="expected 0..399"):
        ckpt.neighbours(N, layer=LAYER)
    with pytest.raises(StoreError, match="hidden size"):
        ckpt.neighbours(np.ones(3), layer=LAYER)


def test_the_index_survives_resume_and_nothing_is_pickled(run_path, client):
    run_neighbours(client, run_path, progress=False)
    run = Run(run_path)
    first, last = run.checkpoints[0], run.checkpoints[-1]
    kept = os.path.join(run_path, schema.STORE_DIR, unit_of(last, LAYER), "ids", "zarr.json")
    mtime = os.stat(kept).st_mtime_ns
    # a build killed half way: its unit only staged (partly written), the committed one gone
    writer = RunWriter(run_path)
    unit = unit_of(first, LAYER)
    writer.loc.rm(schema.STORE_DIR, unit)
    writer.loc.touch(schema.STAGING_DIR, unit, "ids", "zarr.json")  # junk a reader must never see
    assert Run(run_path).checkpoint(first).neighbours_attrs(LAYER) is None
    summary = run_neighbours(client, run_path, progress=False)
    assert summary["done"] == 1 and summary["skipped"] == 2 * len(summary["layers"]) - 1
    assert os.stat(kept).st_mtime_ns == mtime  # the finished unit was skipped, not rewritten
    ckpt = Run(run_path).checkpoint(first)
    check_exact(ckpt, ckpt.hidden(LAYER, "cls"))
    assert list(validate(run_path)) == []
    for root, _, files in os.walk(run_path):  # plain arrays only: no pickle anywhere in the run
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                head = f.read(2)
            assert not name.endswith((".pkl", ".pickle")) and head[:1] != b"\x80", os.path.join(root, name)


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 500, d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, d)).astype(np.float32)
    return x.astype(np.float16)


def test_graph_walk_recall_at_20_on_50k_rows():
    x = clustered(50_000, 64)
    started = time.perf_counter()
    ids, sims, attrs = build_graph(x)
    vectors = knn.unit_rows(x)
    rng = np.random.default_rng(1)
    sample = rng.choice(len(x), 20, replace=False)
    for row in sample:  # the stored rows are exact here
        ref, _ = brute_force(x, x[row].astype(np.float64), 32, exclude=row)
        assert len(set(ids[row]) & set(ref)) >= 31
    recalls = []
    for i in range(200):  # vectors that are no row: a perturbed row, a centroid of a row's neighbours
        row = rng.integers(len(x))
        if i % 2:
            query = knn.unit_rows(vectors[ids[row, :8]].mean(axis=0))
        else:
            query = knn.unit_rows(vectors[row] + 0.5 * rng.standard_normal(64).astype(np.float32) / 8)
        found, _ = knn.graph_search(vectors, ids, query, 20)
        exact, _ = knn.exact(vectors, query, 20)
        recalls.append(len(set(found) & set(exact)) / 20)
    assert np.mean(recalls) >= 0.95, np.mean(recalls)
    assert time.perf_counter() - started < 120


def test_nn_descent_graph_drops_self_and_reaches_recall():
    graph = np.array([[0, 5, 6], [7, 1, 8], [3, 4, 9]])
    ids, sims = drop_self(graph, graph.astype(np.float32), 2)
    np.testing.assert_array_equal(ids, [[5, 6], [7, 8], [3, 4]])  # self first, self inside, self absent
    x = clustered(6_000, 32, seed=2)
    ids, sims, attrs = build_graph(x, exact_rows=0)
    assert attrs["method"] == "nndescent" and ids.shape == (6_000, 32)
    exact_ids, _ = knn.exact_graph(knn.unit_rows(x), 20)
    assert not (ids == np.arange(6_000)[:, None]).any()
    recall = np.mean([len(set(a[:20]) & set(b)) / 20 for a, b in zip(ids, exact_ids)])
    assert recall >= 0.95, recall


def test_similar_on_a_table_row_marks_neighbours_in_every_plot(run_path, client):
    from panel.models.tabulator import CellClickEvent

    from t3vis.ui.projection import ProjectionView
    from t3vis.ui.state import ExplorerState
    from t3vis.ui.table import SIMILAR, DataTable

    hv.extension("bokeh", logo=False)
    run_neighbours(client, run_path, progress=False)
    state = ExplorerState(run_path)
    table, view = DataTable(state=state), ProjectionView(state=state)
    from bokeh.document import Document

    Document().add_root(view.__panel__().get_root())  # rendered: the marks are glyphs of the Bokeh figures
    row = int(table.table.value.index[3])
    table.table._process_event(CellClickEvent(model=None, column=SIMILAR, row=3))
    expected, sims = state.run.checkpoint(state.checkpoint).neighbours(row, k=20, layer=state.layer)
    np.testing.assert_array_equal(state.neighbours.rows, expected)
    assert state.example == row
    frame = table.table.value
    np.testing.assert_array_equal(frame.index, expected)  # the table lists them, best first, with similarity
    np.testing.assert_allclose(frame["similarity"], np.round(sims, 4))
    for which in ("a", "datamap"):
        plot = view.plots[which]
        points = plot.neighbour_data(False)
        x, y = state.data.xy(plot.spec)
        np.testing.assert_array_equal(points["row"], expected)
        np.testing.assert_array_equal(points["x"], x[expected])
        assert list(plot.neighbour_data(True)["row"]) == [row]
        marks, = plot._mark_sources.values()  # what the page draws: one figure, its marks' sources
        np.testing.assert_array_equal(marks["near"].data["row"], expected)
        assert list(marks["query"].data["row"]) == list(marks["example"].data["row"]) == [row]
    state.compare = True  # the same example's neighbours in the other checkpoint, in the right-hand plot
    other, _ = state.run.checkpoint(state.checkpoint_b).neighbours(row, k=20, layer=state.layer_b)
    np.testing.assert_array_equal(view.plots["b"].neighbour_data(False)["row"], other)
    assert "also neighbours in" in str(table._info.object)
    state.selection = np.arange(N) < 30
    state.find_similar()  # the centroid of the selection
    centroid = state.run.checkpoint(state.checkpoint).centroid(np.arange(30), layer=state.layer)
    np.testing.assert_array_equal(state.neighbours.rows,
                                  state.run.checkpoint(state.checkpoint).neighbours(centroid, layer=state.layer)[0])
    state.clear_neighbours()
    assert state.neighbours is None and len(view.plots["a"].neighbour_data(False)["row"]) == 0
    assert all(len(marks["near"].data["row"]) == 0 for marks in view.plots["a"]._mark_sources.values())
    assert len(table.table.value) == min(table.page_size, 30)


@pytest.mark.browser
def test_similar_on_a_row_in_the_browser_lists_and_marks_the_neighbours(small_page):  # noqa: F811
    """A click on a row's "≈" lists its neighbours with their similarity and draws them in the projection."""
    from playwright.sync_api import expect

    page, explorer = small_page
    state = explorer.state
    row = int(explorer.table.table.value.index[0])
    expected, sims = state.run.checkpoint(state.checkpoint).neighbours(row, k=state.neighbour_k, layer=state.layer)
    page.locator(".tabulator-row").first.get_by_text("≈").click()
    expect(page.get_by_text(f"{len(expected)} nearest neighbours of row {row}", exact=False)).to_be_visible(
        timeout=30_000)
    expect(page.locator(".tabulator-col-title").get_by_text("similarity")).to_be_visible()
    assert state.example == row
    # the projection draws them: a Bokeh data source of the page holds exactly those rows, best first
    drawn = page.evaluate("""() => {
      for (const doc of Bokeh.documents) for (const model of doc._all_models.values())
        if (model.type === "ColumnDataSource" && model.data.similarity !== undefined && model.data.row.length > 1)
          return Array.from(model.data.row);
      return null;
    }""")
    assert drawn == [int(r) for r in expected]
