"""Sphinx configuration of the ccdflow documentation site.

Build: ``python -m sphinx -W -b html docs docs/_build/html`` (``pip install -e '.[docs]'``).
Pages are Markdown (MyST); the API reference is generated from the numpydoc docstrings.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

# Importing a package's ``__main__`` module runs its command (``python -m pipeline.main_job``
# would start the main job): the API reference gets empty stand-ins instead.
for _path in sorted(p for pkg in ("butler", "pipeline") for p in Path(ROOT, pkg).rglob("__main__.py")):
    _name = ".".join(_path.relative_to(ROOT).with_suffix("").parts)
    sys.modules.setdefault(_name, types.ModuleType(_name, "Command-line entry point (``python -m``)."))

project = "ccdflow"
author = "the ccdflow developers"
copyright = "2026, the ccdflow developers"  # noqa: A001 - Sphinx's name
release = "0.1.0"

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
templates_path = ["_templates"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autosummary_generate = True
autosummary_imported_members = False
# Document each name where it is defined (``ignore-module-all``): packages re-export their
# modules' names, which would otherwise be described twice.
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Docstrings use single backticks for names (numpydoc style); they render as code.
default_role = "literal"

html_theme = "alabaster"
html_static_path: list[str] = []
html_title = "ccdflow"
html_theme_options = {"description": "LSST-style data butler, pipetask and CCD calibration in pure Python"}


def _skip_foreign(app, what, name, obj, skip, options):  # noqa: ANN001, ANN202 - Sphinx's signature
    """Skip names imported from other libraries (pydantic's ``Field`` re-exported by configs)."""
    module = getattr(obj, "__module__", None) or ""
    if module and not module.startswith(("butler", "pipeline", "registry_schema")) and what == "module":
        return True
    return skip


# ```mermaid fences (docs/architecture.md) render as diagrams on code hosts; here they are shown
# as their text, through a directive of that name (no JavaScript, no network).
myst_fence_as_directive = ["mermaid"]


def setup(app):  # noqa: ANN001, ANN201 - Sphinx's signature
    """Connect the member filter; show ``mermaid`` blocks as text."""
    from docutils import nodes
    from sphinx.util.docutils import SphinxDirective

    class MermaidAsText(SphinxDirective):
        has_content = True
        optional_arguments = 1
        final_argument_whitespace = True

        def run(self):  # noqa: ANN202
            text = "\n".join(self.content)
            return [nodes.literal_block(text, text, language="text")]

    app.connect("autodoc-skip-member", _skip_foreign)
    app.add_directive("mermaid", MermaidAsText)
