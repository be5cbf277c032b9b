"""The documentation site builds with warnings as errors and carries its key content."""

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_missing = [m for m in ("sphinx", "myst_nb", "jupyter_server_mathjax")
            if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(_missing), reason=f"docs build needs {' and '.join(_missing)} "
                       "(pip install -e \".[docs]\")"),
]


# the site shows each lesson's source (its exercises answered), executed
SOURCES = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built as CI builds it (-W). Its notebook pages are executed notebooks: the
    test session executes each notebook once (tests/_notebook_runs.py), tests/test_notebooks.py
    checks that run and this build renders it (docs/conf.py reads $LRSA_DOCS_EXECUTED), so no
    notebook is executed twice."""
    import _notebook_runs

    reason = _notebook_runs.unavailable()
    if reason:
        pytest.skip(f"the docs show the notebooks executed: {reason}")
    out = tmp_path_factory.mktemp("docs")
    html, doctrees, executed = out / "html", out / "doctrees", out / "executed"
    start = time.perf_counter()
    failed = _notebook_runs.write_executed(SOURCES, executed)
    if failed:
        pytest.fail(f"notebooks failed to execute, so the site cannot show them: {failed} "
                    "(tests/test_notebooks.py says why)", pytrace=False)
    executing = time.perf_counter() - start
    env = {**os.environ, "LRSA_DOCS_EXECUTED": str(executed)}
    env.pop("LRSA_DOCS_ALLOW_ERRORS", None)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
         "-d", str(doctrees), str(ROOT / "docs"), str(html)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, (
        f"sphinx-build failed (exit {proc.returncode}) after {seconds:.0f} s:\n"
        f"{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}")
    print(f"docs built in {seconds:.1f} s (the notebooks executed before: {executing:.1f} s, "
          "or nothing where test_notebooks.py ran first)")
    return html


def test_build_succeeds(site):
    for page in ("index", "getting_started", "derivations", "honest_notes", "api", "notebooks",
                 "teaching", "course", "benchmarks", "assets", "full_runs", "scaling"):
        assert (site / f"{page}.html").is_file(), page


def test_api_page_documents_the_modules(site):
    api = (site / "api.html").read_text(encoding="utf-8")
    assert "prox_l21" in api
    # rendered by autodoc, not left as raw reStructuredText
    for obj in ("lrsa.prox.prox_l21", "lrsa.prox.svt", "lrsa.solver.solve_layer",
                "lrsa.admm.he_yuan_correction", "lrsa.pipeline.compress"):
        assert f'id="{obj}"' in api, obj
    assert ".. py:function::" not in api and ".. automodule::" not in api


def test_honest_notes(site):
    notes = (site / "honest_notes.html").read_text(encoding="utf-8")
    assert "not convex" in notes
    assert "1.0865" in notes and "0.9745" in notes and "1.0278" in notes
    results = ROOT / "benchmarks" / "results" / "vgg16_cifar10.md"
    if not results.is_file():
        assert "Not run yet" in notes


def test_every_notebook_is_listed(site):
    index = (site / "notebooks.html").read_text(encoding="utf-8")
    course = (site / "course.html").read_text(encoding="utf-8")
    for nb in SOURCES:
        rel = f"{nb.stem}.html"
        assert (site / "_generated" / "notebooks" / rel).is_file(), nb.name
        assert f"_generated/notebooks/{rel}" in index, nb.name
        assert f"_generated/notebooks/{rel}" in course, nb.name


def _image_outputs(nb_path):
    import json

    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] if c["cell_type"] == "code"
               for o in c.get("outputs", []))


def test_every_notebook_page_shows_its_outputs(site):
    """Each lesson's page is its source executed: a figure for every image output (the
    static small-multiples image standing in for each slider figure), the printed checks
    ("correct" for every exercise), and no error. The committed notebooks hold no outputs,
    so these can only come from the build."""
    pages = 0
    for nb in SOURCES:
        page = site / "_generated" / "notebooks" / f"{nb.stem}.html"
        html = page.read_text(encoding="utf-8")
        executed = ROOT / "docs" / "_generated" / "notebooks" / nb.name
        figures = _image_outputs(executed)
        images = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", html)
        assert len(images) >= figures, (nb.name, len(images), figures)
        for src in images:
            assert (page.parent / src).resolve().is_file(), (nb.name, src)
        assert 'class="output' in html or "cell_output" in html, nb.name
        assert "output traceback" not in html, nb.name
        assert "not answered yet" not in html and "not yet. Hint" not in html, nb.name
        assert ": correct." in html, nb.name
        pages += figures > 0
    assert pages == len(SOURCES)  # every lesson draws something
    for nb in SOURCES:
        src = "".join(nb.read_text(encoding="utf-8"))
        if "all checks passed" in src:
            html = (site / "_generated" / "notebooks" / f"{nb.stem}.html").read_text(
                encoding="utf-8")
            assert html.count("all checks passed") >= 2, nb.name  # the source and its output


def test_full_runs_are_rendered_with_their_figures_and_passed_checks(site):
    """docs/full_runs/ holds notebooks 03-05 as executed once in full mode (real VGG-16):
    each must be the full mode, have run its own checks to the end, and show its figures."""
    import json

    runs = sorted((ROOT / "docs" / "full_runs").glob("*.ipynb"))
    assert [p.name[:2] for p in runs] == ["03", "04", "05"]
    page = (site / "full_runs.html").read_text(encoding="utf-8")
    for nb_path in runs:
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        text = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                       for c in nb["cells"] if c["cell_type"] == "code"
                       for o in c.get("outputs", []))
        assert "full mode: vgg16_bn / CIFAR-10" in text, nb_path.name
        assert "all checks passed" in text, nb_path.name
        assert not any(o["output_type"] == "error" for c in nb["cells"]
                       for o in c.get("outputs", [])), nb_path.name
        html = (site / "full_runs" / f"{nb_path.stem}.html").read_text(encoding="utf-8")
        assert html.count("<img") >= 1, nb_path.name
        assert f"full_runs/{nb_path.stem}.html" in page


def _script_sources(html):
    return re.findall(r"<script\b[^>]*\bsrc=\"([^\"]+)\"", html)


def test_math_and_scripts_load_without_a_network(site):
    """MathJax comes from the site itself (docs/conf.py copies it from jupyter-server-mathjax):
    no page loads a script from a CDN, and every MathJax file a page names is there."""
    pages = [p for p in site.rglob("*.html") if "_static" not in p.parts]
    math_pages = 0
    for page in pages:
        html = page.read_text(encoding="utf-8")
        for src in _script_sources(html):
            assert not re.match(r"(https?:)?//", src) and "cdn." not in src, (page.name, src)
            if "mathjax" in src.lower():
                path, _, query = src.partition("?")
                assert (page.parent / path).resolve().is_file(), (page.name, src)
                config = dict(q.split("=", 1) for q in query.split("&") if "=" in q)["config"]
                mathjax = (page.parent / path).resolve().parent
                assert (mathjax / "config" / f"{config}.js").is_file(), (page.name, config)
                math_pages += 1
    assert math_pages >= 3  # at least index, derivations and the notebooks typeset math
    derivations = (site / "derivations.html").read_text(encoding="utf-8")
    assert any("MathJax.js" in src for src in _script_sources(derivations))
    # the HTML-CSS output typesets with the STIX-Web web fonts: they must be copied too
    assert any((site / "_static" / "mathjax" / "fonts" / "HTML-CSS" / "STIX-Web" / "woff")
               .glob("*.woff"))


def test_bare_widget_outputs_are_left_out(site):
    """docs/full_runs/ notebooks hold tqdm progress bars and a slider box saved as widget
    views whose only other form is a text/plain repr ("0%|  | 0/12", "VBox(...)"): without a
    widget front-end neither is shown."""
    for page in (site / "full_runs").glob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert "application/vnd.jupyter.widget-view+json" not in html, page.name
        assert "0%|" not in html and "VBox(children=" not in html, page.name


def test_markdown_outputs_are_rendered(site):
    """Notebook 05 displays its per-layer table as a text/markdown output: a table on the
    page, not rows of pipes."""
    html = (site / "full_runs" / "05_vgg16_cifar10.html").read_text(encoding="utf-8")
    assert "|---|" not in html
    assert any("conv1-2" in t for t in re.findall(r"<table\b.*?</table>", html, re.S))


def test_interactive_figures_render_their_static_image(tmp_path):
    """An lrsa.course.widgets figure displays one bundle: widget view, static image/png, text/plain.
    The site has no widget JavaScript, so the docs settings must pick the image/png. Built as
    a one-notebook project with docs/conf.py's settings (sphinx-build -c docs)."""
    pytest.importorskip("ipywidgets", reason="the widget view exists only with ipywidgets")
    nbformat = pytest.importorskip("nbformat")
    import numpy as np

    from lrsa.course.widgets import prox_explorer

    bundle = prox_explorer(np.random.default_rng(0).normal(size=(6, 9)))._repr_mimebundle_()
    assert {"application/vnd.jupyter.widget-view+json", "image/png"} <= set(bundle)
    nb = nbformat.v4.new_notebook(metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# Widget"),
                nbformat.v4.new_code_cell("widgets.prox_explorer(V)", execution_count=1,
                                          outputs=[nbformat.v4.new_output(
                                              "execute_result", data=bundle,
                                              execution_count=1)])]
    src, out = tmp_path / "src", tmp_path / "html"
    src.mkdir()
    nbformat.write(nb, src / "widget.ipynb")
    (src / "index.md").write_text("# Tiny\n\n```{toctree}\nwidget\n```\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", "-c", str(ROOT / "docs"),
         str(src), str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    html = (out / "widget.html").read_text(encoding="utf-8")
    images = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", html)
    assert len(images) == 1 and (out / images[0]).is_file(), images
    assert "application/vnd.jupyter.widget-view+json" not in html
    assert "interactive figure:" not in html  # not the text/plain fallback either


def test_internal_links_resolve(site):
    """Every relative link and image on every page points to a file of the site, and every
    #fragment to an id on its page (Sphinx's linkcheck skips local links it did not write)."""
    from html.parser import HTMLParser
    from urllib.parse import unquote, urlsplit

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.refs, self.ids = [], set()

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if a.get("id"):
                self.ids.add(a["id"])
            if tag == "a" and a.get("name"):
                self.ids.add(a["name"])
            for key in ("href", "src"):
                if a.get(key) and (tag, key) in {("a", "href"), ("img", "src"),
                                                 ("link", "href"), ("script", "src")}:
                    self.refs.append(a[key])

    parsed = {}

    def parse(page):
        if page not in parsed:
            p = Links()
            p.feed(page.read_text(encoding="utf-8"))
            parsed[page] = p
        return parsed[page]

    pages = [p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts]
    assert len(pages) > 20
    broken, checked = [], 0
    for page in pages:
        for ref in parse(page).refs:
            parts = urlsplit(ref)
            if parts.scheme or parts.netloc or ref.startswith(("mailto:", "javascript:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {ref}")
            elif parts.fragment and target.suffix == ".html" and \
                    unquote(parts.fragment) not in parse(target).ids:
                broken.append(f"{page.relative_to(site)}: {ref} (no such anchor)")
    assert checked > 100
    assert not broken, "\n".join(broken[:30])


def test_readme_is_a_front_door():
    """The README stays short: what lrsa is, set-up, an example, one results table, the
    course, links (issue 24). Its links to the docs point to pages that exist."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert readme.count("\n| ") <= 20  # one results table, no measurement history
    for target in re.findall(r"\]\(((?:docs/)[^)#]+)", readme):
        assert (ROOT / target).exists(), target
