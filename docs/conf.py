"""Sphinx configuration for the lrsa documentation.

Build:  sphinx-build -W --keep-going -b html docs docs/_build/html

When the build starts (``config-inited``, and only when the source folder is ``docs/``) this
file writes ``docs/_generated/`` (ignored by git):

* ``_generated/notebooks/``: each lesson's source ``../notebooks/solutions/*.ipynb`` (the
  notebook with its exercises answered; the student version in ``../notebooks/`` is the same
  without the answers) **executed** (smoke mode, ``LRSA_SMOKE=1``: the small CNN on
  scikit-learn's bundled digits, offline, seeded), so every page shows its figures, tables and
  checks; a placeholder page when there are none. An executed copy is reused where one
  exists for the same cells: in ``$LRSA_DOCS_EXECUTED`` (where tests/test_docs.py leaves the
  copies the test session executed once for both tests/test_notebooks.py and this build), or
  in this folder from an earlier build by the same version of lrsa's code. Otherwise the
  notebook is executed here with nbclient (the ``nb`` extra; a failing cell fails the build,
  unless ``LRSA_DOCS_ALLOW_ERRORS=1`` asks to show the error, for a look while a notebook is
  being edited);
* ``_generated/fragments/results.md``: ``../benchmarks/results/vgg16_cifar10.md`` if the
  benchmark has been run, else a "not run yet" note;
* ``_generated/fragments/solver.md``: ``../benchmarks/results/solver.json`` as a table, or a
  "not run yet" note.

Files are rewritten only when their content changes, so incremental builds stay cheap.

At build time it copies MathJax 2.7 from the ``jupyter-server-mathjax`` package into
``_static/mathjax/`` of the output, so the site typesets its math without a network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document the working tree, installed or not

import lrsa  # noqa: E402
from docutils import nodes  # noqa: E402
from sphinx.transforms.post_transforms import SphinxPostTransform  # noqa: E402

# -- project -------------------------------------------------------------------------------
project = "lrsa"
author = "lrsa contributors"
copyright = "lrsa contributors"
release = version = lrsa.__version__

# -- extensions ----------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",  # also registers the MyST markdown parser: do not add myst_parser as well
]

exclude_patterns = ["_build", "_generated/fragments", "**.ipynb_checkpoints", "Thumbs.db",
                    ".DS_Store"]
root_doc = "index"

# -- MathJax, bundled ------------------------------------------------------------------------
# The site must typeset its math without a network (a classroom, a train, an air-gapped
# cluster): Sphinx's default loads MathJax from a CDN, and offline every formula would show as
# raw LaTeX. MathJax 2.7 is therefore served from the build itself, copied out of the
# `jupyter-server-mathjax` package (the `docs` extra). That package ships the HTML-CSS output
# with the STIX-Web web fonts only (no CommonHTML, no TeX fonts), hence the HTML-CSS settings.
try:
    import jupyter_server_mathjax
except ImportError as e:
    raise ImportError('the docs bundle MathJax from jupyter-server-mathjax: '
                      'pip install -e ".[docs]"') from e

MATHJAX_SRC = Path(jupyter_server_mathjax.__file__).parent / "static"
MATHJAX_DIR = "mathjax"  # under _static/ in the output
# What the configuration below can load, relative to MATHJAX_SRC (about half the package):
# not the SVG output, the other fonts' data, the other languages, nor the speech rules'
# Internet-Explorer-only bundle (mathmaps_ie.js).
MATHJAX_FILES = ("MathJax.js", "LICENSE", "config/TeX-AMS-MML_HTMLorMML-full.js",
                 "extensions/**/*", "jax/input/**/*", "jax/element/**/*",
                 "jax/output/HTML-CSS/**/*", "fonts/HTML-CSS/STIX-Web/woff/*",
                 "localization/en/*")
MATHJAX_SKIP = {"extensions/a11y/mathmaps/mathmaps_ie.js"}
mathjax_path = f"{MATHJAX_DIR}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {
    # myst turns $...$, $$...$$ and amsmath environments into math nodes, which Sphinx writes
    # between \(...\) and \[...\]: MathJax looks for those delimiters only, so a literal $
    # or \begin{...} in prose stays text
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                "processEscapes": False, "processEnvironments": False, "processRefs": False},
    # only the STIX-Web web fonts are bundled: never look for local or image fonts, whose
    # metrics files are not there
    "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web",
                 "imageFont": None},
    # the menu's renderer and language choices would load files that are not bundled
    "MathMenu": {"showRenderer": False, "showLocale": False},
}


def _copy_mathjax(app):
    """Copy MATHJAX_FILES into the output's _static/ (only files missing or changed)."""
    if app.builder.format != "html":
        return
    dst = Path(app.outdir) / "_static" / MATHJAX_DIR
    for pattern in MATHJAX_FILES:
        for src in MATHJAX_SRC.glob(pattern):
            rel = src.relative_to(MATHJAX_SRC)
            if not src.is_file() or rel.as_posix() in MATHJAX_SKIP:
                continue
            out = dst / rel
            st = src.stat()
            if out.is_file() and (out.stat().st_size, int(out.stat().st_mtime)) == (
                    st.st_size, int(st.st_mtime)):
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)


# -- MyST / myst-nb --------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
# the notebooks write display math inside list items and sentences ("... gives
# $$x = y,$$ one ..."), as JupyterLab allows: parse it there too, or it stays raw TeX
myst_dmath_double_inline = True
# myst would write a MathJax 3/4 configuration (which MathJax 2 does not read) and mark whole
# sections "tex2jax_ignore"; the delimiters set in mathjax2_config do that job instead
myst_update_mathjax = False
# myst-nb executes nothing itself: _generate() below hands it notebooks already executed
# (smoke mode, offline), reused from an earlier build or from the test suite's own run, so a
# notebook is executed once per change, not once per build or once per test.
nb_execution_mode = "off"
# Widget outputs: the site has no kernel and no widget JavaScript (and loads nothing from a
# network), so a widget view would render as nothing. lrsa's interactive figures
# (lrsa.course.widgets.interact) carry a static small-multiples image/png beside the widget view:
# never pick the widget view, so that image is shown. ipywidgets_js empty: no require.js or
# widget manager from a CDN on pages whose notebook saved widget state.
nb_mime_priority_overrides = [("*", "application/vnd.jupyter.widget-view+json", None)]
nb_ipywidgets_js: dict = {}
# lrsa's reports display markdown tables (display(Markdown(markdown_table(...)))): render
# text/markdown outputs as JupyterLab does, GitHub-flavoured; myst-nb's default, CommonMark,
# has no tables and showed them as rows of pipes
nb_render_markdown_format = "gfm"

# -- autodoc / napoleon --------------------------------------------------------------------
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # few annotations in lrsa; the docstrings carry the types
# Optional dependencies imported by some modules: mock them only where they are missing,
# so the API page builds from a plain `pip install -e ".[docs]"`.
autodoc_mock_imports = [m for m in ("cvxpy", "clarabel", "scs", "ipywidgets", "sklearn")
                        if importlib.util.find_spec(m) is None]

napoleon_google_docstring = False
napoleon_numpy_docstring = True
# `Attributes` sections as :ivar: fields, not `.. attribute::` entries, so dataclass
# fields are not described twice (that would be a duplicate-object warning under -W).
napoleon_use_ivar = True
napoleon_use_rtype = False
napoleon_attr_annotations = False  # dataclass annotations are "object": no information
napoleon_preprocess_types = False  # the docstrings use free-form types: "(n, d) array"

# Every reference to one of lrsa's own objects must resolve (-W turns a broken one into a
# failed build). Not checked: numpy-style types, which are words ("array or tensor",
# "float > 0", "sequence"), not objects; and other libraries' objects (torch, numpy, the
# standard library), which have no inventory to resolve against offline (no intersphinx).
nitpicky = True
nitpick_ignore_regex = [(r"py:class", r"(?!lrsa\.).*"),
                        (r"py:\w+", r"(torch|numpy|np|os|collections|typing)\..*")]

# No warning is suppressed: the build passes with -W as it is.
suppress_warnings: list[str] = []

_FIELD_SECTIONS = {"Parameters", "Other Parameters", "Attributes", "Returns", "Yields"}
_ENTRY = re.compile(r"^(\s*)([A-Za-z_*][\w*]*(?:,\s*[A-Za-z_*][\w*]*)*) : (.+)$")


def _entries_as_descriptions(app, what, name, obj, options, lines):
    """lrsa's docstrings often write ``name : what it is`` on one line, a description
    rather than a numpydoc type; napoleon would render it as "name (what it is)". Entries
    with no description block, or whose first line is wrapped prose, are rewritten as
    ``name`` + indented description; ``name : short type`` (up to 40 characters) followed
    by an indented description is kept as it is. Runs before napoleon (priority 400)."""
    out, section, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and nxt.strip() and set(nxt.strip()) == {"-"}:
            section = line.strip()
            out += [line, nxt]
            i += 2
            continue
        m = _ENTRY.match(line) if section in _FIELD_SECTIONS else None
        if m:
            indent = m.group(1)
            j = i + 1
            continued = j < len(lines) and lines[j].strip() and (
                len(lines[j]) - len(lines[j].lstrip()) > len(indent))
            if not continued or len(m.group(3)) > 40:  # > 40 characters: prose, not a type
                # ":ivar U, V:" would read "U," as a type: one entry per name instead
                names = ([n.strip() for n in m.group(2).split(",")]
                         if section == "Attributes" else [m.group(2)])
                for n in names:
                    out += [indent + n, indent + "    " + m.group(3)]
                i += 1
                continue
        out.append(line)
        i += 1
    lines[:] = out


def _skip_namedtuple_aliases(app, what, name, obj, skip, options):
    # NamedTuple fields document themselves as "Alias for field number k": noise, and the
    # class signature already names the fields.
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


# -- HTML ----------------------------------------------------------------------------------
html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_title = f"lrsa {release}"
html_static_path: list[str] = []
html_show_sourcelink = False


# -- generated pages -----------------------------------------------------------------------
GENERATED = DOCS / "_generated"
RESULTS = ROOT / "benchmarks" / "results"
# modules api.md lists by hand; any other public lrsa/*.py (viz, widgets, ...) is appended
# at build time, so modules added later are documented without editing the docs
API_MODULES = {"prox", "admm", "solver", "objective", "solution", "structured_fit", "arrays",
               "decompose", "attention", "reference", "batchnorm", "features", "layers",
               "pipeline", "report", "models", "data", "image_folder", "train"}
NOT_API = {"cli", "cli_parser"}  # the command line is documented in getting_started.md
NOTEBOOK_EXTRA = (".png", ".svg", ".jpg", ".jpeg", ".gif")  # images notebooks may link


def _sync_dir(dst: Path, files: dict[str, bytes]) -> None:
    """Make ``dst`` hold exactly ``files`` (name -> bytes), touching only what changed."""
    dst.mkdir(parents=True, exist_ok=True)
    for old in dst.iterdir():
        if old.is_file() and old.name not in files:
            old.unlink()
    for name, data in files.items():
        path = dst / name
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)


def _demote_headings(text: str, levels: int = 2) -> str:
    """Push markdown headings down ``levels`` (outside code fences) so an included report
    nests under the section that includes it."""
    out, fence = [], None
    for line in text.splitlines():
        m = re.match(r"\s*(```+|~~~+)", line)
        if m:
            fence = None if fence and m.group(1)[0] == fence else (fence or m.group(1)[0])
        elif fence is None and re.match(r"#{1,6}\s", line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out) + "\n"


def _cell(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v).replace("|", r"\|")


def _solver_markdown(path: Path) -> str:
    """benchmarks/results/solver.json: scalar fields as a list, per-layer rows as a table."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return f"`{path.name}` exists but could not be read ({type(e).__name__}).\n"
    if not isinstance(data, dict):
        data = {"layers": data}
    lines = []
    for key, value in data.items():
        if not isinstance(value, (list, dict)):
            lines.append(f"- {key}: {_cell(value)}")
    for key, rows in data.items():
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            cols = list(dict.fromkeys(k for r in rows for k in r))
            lines += ["", f"`{key}`:", "", "| " + " | ".join(cols) + " |",
                      "|" + "|".join("---" for _ in cols) + "|"]
            lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |"
                      for r in rows]
    return "\n".join(lines) + "\n"


def cells_digest(nb: dict) -> str:
    """SHA-256 of a notebook's cells as written (type and source), outputs left out."""
    cells = [(c.get("cell_type"), "".join(c.get("source", ""))) for c in nb.get("cells", [])]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def _ran_cleanly(nb: dict) -> bool:
    outputs = [o for c in nb.get("cells", []) if c.get("cell_type") == "code"
               for o in c.get("outputs", [])]
    return bool(outputs) and not any(o.get("output_type") == "error" for o in outputs)


def _executed_copy(src: Path, rel: str, previous: Path) -> bytes | None:
    """An executed copy of ``src``, stamped with what executed it, or None.

    Taken from ``$LRSA_DOCS_EXECUTED/rel`` (the test suite's run in this session) when its
    cells are those of ``src``; else from ``previous`` (the last build's) when its stamp says
    it was executed from these cells by this very version of lrsa's code (any change to
    ``lrsa/`` executes the notebooks again, so the pages show what the code does)."""
    from lrsa.utils import code_version

    cells = cells_digest(json.loads(src.read_text(encoding="utf-8")))
    stamp = {"cells": cells, "lrsa_code": code_version()}
    shared = os.environ.get("LRSA_DOCS_EXECUTED")
    if shared:
        try:
            nb = json.loads((Path(shared) / rel).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            nb = None
        if nb is not None and _ran_cleanly(nb) and cells_digest(nb) == cells:
            nb.setdefault("metadata", {})["lrsa_docs"] = stamp
            return (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode()
    try:
        data = previous.read_bytes()
        nb = json.loads(data)
    except (OSError, ValueError):
        return None
    if _ran_cleanly(nb) and nb.get("metadata", {}).get("lrsa_docs") == stamp:
        return data
    return None


def execute_notebook(src: Path) -> bytes:
    """Execute ``src`` as the test suite does (nbclient, kernel python3, in its own folder,
    ``LRSA_SMOKE=1``) and return the executed notebook; raise naming the failing cell."""
    try:
        import nbclient
        import nbformat
    except ImportError as e:
        raise ImportError('the docs execute the notebooks with nbclient: pip install -e '
                          '".[docs]"') from e
    nb = nbformat.read(src, as_version=4)
    # LRSA_DOCS_ALLOW_ERRORS=1 (never in CI): show a failing cell's error on the page and go on,
    # to look at a site while a notebook is being edited; such a copy is never reused
    allow_errors = os.environ.get("LRSA_DOCS_ALLOW_ERRORS") == "1"
    old = os.environ.get("LRSA_SMOKE")
    os.environ["LRSA_SMOKE"] = "1"  # the kernel inherits the environment
    start = time.perf_counter()
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=allow_errors,
                                resources={"metadata": {"path": str(src.parent)}}).execute()
    except Exception as e:  # CellExecutionError, DeadKernelError, a missing kernel...
        raise RuntimeError(f"executing {src.relative_to(ROOT)} for the docs failed: {e}") from e
    finally:
        if old is None:
            os.environ.pop("LRSA_SMOKE", None)
        else:
            os.environ["LRSA_SMOKE"] = old
    print(f"lrsa docs: executed {src.relative_to(ROOT)} in {time.perf_counter() - start:.1f} s "
          "(LRSA_SMOKE=1)")
    if not allow_errors:  # a copy showing an error is never reused
        from lrsa.utils import code_version

        nb.metadata["lrsa_docs"] = {"cells": cells_digest(nb), "lrsa_code": code_version()}
    return (nbformat.writes(nb) + "\n").encode()


def _notebook_files(src_dir: Path, dst_dir: Path, rel_prefix: str) -> dict[str, bytes]:
    """name -> bytes for ``dst_dir``: each notebook of ``src_dir`` executed, and the images
    notebooks may link."""
    files = {}
    if not src_dir.is_dir():
        return files
    for p in sorted(src_dir.iterdir()):
        if p.is_file() and p.suffix == ".ipynb":
            files[p.name] = (_executed_copy(p, rel_prefix + p.name, dst_dir / p.name)
                             or execute_notebook(p))
        elif p.is_file() and p.suffix.lower() in NOTEBOOK_EXTRA:
            files[p.name] = p.read_bytes()
    return files


def _generate() -> None:
    # each lesson's source, its exercises answered, executed (or reused, see the docstring)
    files = _notebook_files(ROOT / "notebooks" / "solutions", GENERATED / "notebooks",
                            "solutions/")
    if not any(name.endswith(".ipynb") for name in files):
        files["none.md"] = (b"# No notebooks yet\n\nThere are no notebooks in "
                            b"`notebooks/solutions/` at the time of this build.\n")
    _sync_dir(GENERATED / "notebooks", files)

    # benchmark results, or a note that they have not been produced
    vgg = RESULTS / "vgg16_cifar10.md"
    if vgg.is_file():
        results = (f"From `benchmarks/results/{vgg.name}` (produced by "
                   f"`python benchmarks/vgg16_cifar10.py`):\n\n"
                   + _demote_headings(vgg.read_text()))
    else:
        results = ("*Not run yet:* `benchmarks/results/vgg16_cifar10.md` does not exist in this "
                   "checkout. Run `python benchmarks/vgg16_cifar10.py` (needs the VGG-16 "
                   "baseline and CIFAR-10) and rebuild the docs.\n")
    solver_json = RESULTS / "solver.json"
    if solver_json.is_file():
        solver = ("From `benchmarks/results/solver.json` (produced by "
                  "`python benchmarks/solver.py`). Columns: `lin_*` linear response, "
                  "`relu_*` ReLU response; `*_s` seconds, `*_it` iterations, `*_conv` "
                  "converged, `*_r` and `*_s_res` the final relative primal and dual "
                  "residuals, `*_rank` rank of B, `*_nz` nonzero columns of A, `*_CR` "
                  "CR(A+B).\n\n"
                  + _solver_markdown(solver_json))
    else:
        solver = ("*Not run yet:* `benchmarks/results/solver.json` does not exist in this "
                  "checkout. Run `python benchmarks/solver.py` and rebuild the docs.\n")
    extra = []  # the other benchmarks' reports, when they have been run
    for stem, title, command in (
            ("nin_cifar10", "NIN on CIFAR-10 (paper Table II's operating point)",
             "python benchmarks/nin_cifar10.py --epochs 5"),
            ("nin_cifar10_lr3e-3", "NIN at the same point, fine-tuned at lr 3e-3 (code b04a5e5)",
             "python benchmarks/nin_cifar10.py --epochs 5 --lr 0.003 "
             "--out benchmarks/results/nin_cifar10_lr3e-3"),
            ("nin_cifar10_20ep", "NIN from the 20-epoch baseline, lr 3e-3 (code 18da3c9)",
             "python benchmarks/nin_cifar10.py --epochs 5 --lr 0.003 --checkpoint "
             "nin_bn_cifar10_20ep.pt --baselines --out benchmarks/results/nin_cifar10_20ep"),
            ("nin_table_ii", "NIN on CIFAR-10 at Table II's per-layer rates (code 892f6fd)",
             "python benchmarks/nin_cifar10.py --table-ii-scale 1 --epochs 1 --lr 0.003 "
             "--baselines svd rrr lrsa_linear --out benchmarks/results/nin_table_ii"),
            ("models", "Sizes and speeds per architecture (paper Tables III and VI)",
             "python benchmarks/models.py")):
        md = RESULTS / f"{stem}.md"
        body = (f"From `benchmarks/results/{md.name}` (produced by `{command}`):\n\n"
                + _demote_headings(md.read_text()) if md.is_file()
                else f"*Not run yet:* run `{command}` and rebuild the docs.\n")
        extra += [f"### {title}", "", body]
    # modules that other work may or may not have added yet
    optional = []
    for path in sorted([*(ROOT / "lrsa").glob("*.py"), *(ROOT / "lrsa" / "course").glob("*.py")]):
        name = path.relative_to(ROOT / "lrsa").with_suffix("").as_posix().replace("/", ".")
        if path.stem.startswith("_") or name in API_MODULES or name in NOT_API:
            continue
        optional += [f"## `lrsa.{name}`", "", "```{eval-rst}", f".. automodule:: lrsa.{name}",
                     "```", ""]
    _sync_dir(GENERATED / "fragments", {"results.md": results.encode(),
                                        "solver.md": solver.encode(),
                                        "other_results.md": "\n".join(extra).encode(),
                                        "api_optional.md": "\n".join(optional).encode()})



def _generate_for_this_site(app, config):
    """Generate only when building this folder: tests reuse this configuration for a tiny
    project of their own (``sphinx-build -c docs``), which must not execute the notebooks."""
    if Path(app.srcdir).resolve() == DOCS:
        _generate()


class _DropBareWidgets(SphinxPostTransform):
    """Remove the outputs that are a widget view and nothing else to show but its text/plain
    repr: a tqdm progress bar saved at "0%|  | 0/12", a "VBox(children=...)" of sliders.
    Without a widget front-end that text would be false or noise. Runs before myst-nb picks
    one MIME type per output (its SelectMimeType, priority 4)."""

    default_priority = 3
    formats = ("html",)

    def run(self, **kwargs):
        widget, plain = "application/vnd.jupyter.widget-view+json", "text/plain"
        for node in list(self.document.findall(nodes.container)):
            if node.get("nb_element") != "mime_bundle":
                continue
            types = {child.get("mime_type") for child in node.children}
            if widget in types and types <= {widget, plain}:
                node.parent.remove(node)


def setup(app):
    app.connect("config-inited", _generate_for_this_site)
    app.connect("builder-inited", _copy_mathjax)
    app.add_post_transform(_DropBareWidgets)
    app.connect("autodoc-process-docstring", _entries_as_descriptions, priority=400)
    app.connect("autodoc-skip-member", _skip_namedtuple_aliases)
