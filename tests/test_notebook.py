"""``t3vis.Explorer(path)`` in a Jupyter notebook: a real kernel (ipykernel, run by nbclient) executes it as the
README shows, with no ``pn.extension`` call; its output must carry every resource inline and, converted to HTML,
render in chromium with every request that would need the network aborted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from t3vis.store import Run
from t3vis.store.synth import synth_run
from ui_fixtures import chromium  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              # Panel displays a few empty outputs in a notebook; nbconvert warns that it has nothing to show
              pytest.mark.filterwarnings("ignore:Your element with mimetype:UserWarning")]

EXEC_MIME = "application/vnd.holoviews_exec.v0+json"  # a Panel/HoloViews object rendered in the notebook
LOAD_MIME = "application/vnd.holoviews_load.v0+json"  # Panel/bokeh loading their JS
N = 200


@pytest.fixture(scope="module")
def run_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nb") / "tiny"
    synth_run(path, N, checkpoints=2, num_layers=2, num_heads=2, hidden_size=4, seed=1)
    return path


def this_python_kernel(directory: Path) -> KernelManager:
    """A kernel of the interpreter running the tests: a kernelspec naming ``sys.executable``, looked up only in
    ``directory``, so no ``python3`` kernel some other Jupyter install left on the machine is picked up."""
    spec = directory / "kernels" / "t3vis-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "t3vis test", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(spec.parent)])
    return KernelManager(kernel_name="t3vis-test", kernel_spec_manager=specs)


@pytest.fixture(scope="module")
def executed(run_path, tmp_path_factory):
    """The README's notebook use, run by a real kernel: an explorer, then a second one in the next cell (after
    a cell that says which python the kernel runs)."""
    work = tmp_path_factory.mktemp("kernel")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"),
        nbformat.v4.new_code_cell(f"import t3vis\nt3vis.Explorer({str(run_path)!r})"),
        nbformat.v4.new_code_cell(f"t3vis.Explorer({str(run_path)!r})"),
    ])
    NotebookClient(nb, km=this_python_kernel(work), timeout=180,
                   resources={"metadata": {"path": str(work)}}).execute()
    return nb


def explorer_cells(nb) -> list:
    return nb.cells[1:]


def displayed(cell) -> list[dict]:
    return [o["data"] for o in cell.outputs if o["output_type"] in ("display_data", "execute_result")]


def explorer_html(cell) -> str:
    (result,) = [o for o in cell.outputs if o["output_type"] == "execute_result"]
    assert EXEC_MIME in result["data"], "the cell's value is not a rendered Panel object"
    return result["data"]["text/html"]


def test_the_kernel_is_this_interpreter(executed):
    (printed,) = executed.cells[0].outputs
    assert printed["text"].strip() == sys.executable


def test_explorer_renders_in_a_notebook_without_errors(executed, run_path):
    errors = [o for cell in executed.cells for o in cell.outputs if o["output_type"] == "error"]
    assert not errors, [f"{e['ename']}: {e['evalue']}" for e in errors]
    warnings = "".join(o.get("text", "") for cell in executed.cells for o in cell.outputs
                       if o["output_type"] == "stream")
    assert "was not imported on instantiation" not in warnings  # Panel's "Tabulator not loaded" warning
    for cell in explorer_cells(executed):
        html = explorer_html(cell)
        assert "t3vis explorer" in html and Run(str(run_path)).name in html


def test_resources_are_loaded_inline_once(executed):
    first, second = explorer_cells(executed)
    loads = [d["application/javascript"] for d in displayed(first) if LOAD_MIME in d]
    assert loads, "the first explorer loaded no resources"
    scripts = "".join(loads)
    # the code itself, not CDN addresses: bokeh, Panel and Tabulator
    for marker in ("/* BEGIN bokeh.min.js */", "/* BEGIN bokeh-tables.min.js */", "/* BEGIN panel.min.js */",
                   "/* Tabulator v"):
        assert marker in scripts, marker
    js_urls = re.findall(r"const js_urls = (\[[^\]]*\]);", scripts)
    assert js_urls and all(urls == "[]" for urls in js_urls), js_urls
    # Material UI components carry their code, not a CDN URL to import
    for cell in explorer_cells(executed):
        assert not re.search(r'esm\\?":\\?"https?://', explorer_html(cell))
        assert not re.search(r"<script[^>]+src=[\"']?https?:", explorer_html(cell))
    # a second explorer in the kernel loads nothing again
    assert not [d for d in displayed(second) if LOAD_MIME in d]


def test_outside_a_notebook_only_the_bokeh_backend_is_selected():
    """A script (or ``panel serve``) gets what it got before: no Panel notebook set-up, no inline resources."""
    code = ("import panel as pn, holoviews as hv\n"
            "from t3vis.ui.notebook import in_notebook, load_extensions\n"
            "load_extensions()\n"
            "print(in_notebook(), pn.extension._loaded, pn.config.inline, hv.Store.current_backend)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "False", "False", "bokeh"]


def test_notebook_renders_offline_in_chromium(executed, run_path, chromium, tmp_path):  # noqa: F811
    from nbconvert import HTMLExporter
    from playwright.sync_api import expect

    exporter = HTMLExporter()
    (tmp_path / "nb.html").write_text(exporter.from_notebook_node(executed)[0], encoding="utf-8")
    # what nbconvert's page template itself asks the network for (MathJax, require.js), outputs aside
    template, _ = exporter.from_notebook_node(nbformat.v4.new_notebook())
    template_urls = set(re.findall(r"""https?://[^\s"'<>]+""", template))

    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    aborted = []

    def local_only(route):
        if route.request.url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            aborted.append(route.request.url)
            route.abort()

    page.route("**/*", local_only)
    page.goto((tmp_path / "nb.html").as_uri())
    first_text = Run(str(run_path)).examples(slice(0, 1))["text"].iloc[0]
    for cell in (page.locator(".jp-Cell").nth(1), page.locator(".jp-Cell").nth(2)):
        # statically (no kernel): the page template, the plots' canvases and the table's first page render
        expect(cell.get_by_text("t3vis explorer", exact=True)).to_be_visible(timeout=60_000)
        expect(cell.locator(".tabulator-row")).to_have_count(20, timeout=60_000)
        expect(cell.locator(".tabulator-cell").filter(has_text=first_text)).to_have_count(1)
        sizes = cell.locator("canvas").evaluate_all("cs => cs.map(c => [c.width, c.height])")
        assert sum(w > 100 and h > 100 for w, h in sizes) >= 2, sizes  # the projection and the data map
    assert set(aborted) <= template_urls, sorted(set(aborted) - template_urls)
