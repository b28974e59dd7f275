"""The explorer shows one mislabel score, says what it is and where each table value comes from."""

from __future__ import annotations

import html
import io

import numpy as np
import pandas as pd
from bokeh.document import Document
from ui_fixtures import *  # noqa: F403

from t3vis.analysis.datamaps import MISLABEL_COLUMN, run_data_map
from t3vis.ui.explorer import Explorer


def rendered(**kwargs) -> Explorer:
    e = Explorer(**kwargs)
    doc = Document()
    doc.add_root(e.__panel__().get_root(doc))
    return e


def test_table_rows_come_from_the_recorded_dynamics_and_say_so(small_run):
    e = rendered(runs_dir=small_run.parent, run_name=small_run.name)
    table = e.table.table
    page = table.value
    assert list(page.columns) == ["text", "label", "prediction", "confidence", "variability", "correctness",
                                  MISLABEL_COLUMN, "split"]
    assert table.titles == {c: c for c in page.columns}  # headers are the names the CSV and `t3vis export` use
    tips = {c: html.unescape(tip) for c, tip in table.header_tooltips.items()}  # Tabulator renders them as HTML
    assert tips[MISLABEL_COLUMN].startswith("mislabel_score = aum_ensemble_score: the mean of two percentile ranks")
    assert "higher = more likely mislabeled" in tips[MISLABEL_COLUMN]
    for column in ("prediction", "confidence", "variability", "correctness", MISLABEL_COLUMN):
        assert tips[column].endswith("Source: the recorded training dynamics."), column
    library = run_data_map(e.state.data.run, split=None).loc[page.index]
    for column in ("confidence", "variability", "correctness", MISLABEL_COLUMN):
        np.testing.assert_array_equal(page[column].to_numpy(np.float32), library[column].to_numpy(), err_msg=column)
    names = e.state.data.label_names
    assert page["prediction"].astype(str).tolist() == [names[p] for p in library["prediction"]]
    csv = pd.read_csv(io.StringIO(e.table.csv().getvalue()))
    assert list(csv.columns) == ["row", *page.columns]


def test_colour_scale_of_the_score_shows_its_definition(small_run):
    e = rendered(runs_dir=small_run.parent, run_name=small_run.name)
    e.state.color_by = MISLABEL_COLUMN
    legend = str(e.projection._legend.object)
    assert "<b>mislabel score</b>" in legend and "mislabel_score = aum_ensemble_score" in legend
    assert "higher = more likely mislabeled" in legend and "Range 0 to 1" in legend
    e.state.color_by = "label"
    assert "higher = more likely" not in str(e.projection._legend.object)


def test_without_dynamics_the_table_shows_the_checkpoint_and_says_so(runs_dir):
    e = rendered(runs_dir=runs_dir, run_name="bare")
    table = e.table.table
    assert list(table.value.columns) == ["text", "label", "pred", "loss", "split"]
    tip = html.unescape(table.header_tooltips["loss"])
    assert tip.endswith("Source: the pipeline's extraction of the chosen checkpoint.")
