"""Sphinx configuration for flowkit's documentation (MyST Markdown pages + autodoc).

Build with warnings as errors, as CI does::

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import flowkit

# The generated CLI reference (docs/_ext/cli_reference.py).
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

# -- Project -------------------------------------------------------------------
project = "flowkit"
author = "flowkit developers"
copyright = "flowkit developers"
release = flowkit.__version__
version = ".".join(release.split(".")[:2])

# -- General -------------------------------------------------------------------
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "cli_reference",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

# Unresolved cross-references (e.g. to dramatiq or pydantic types, which we
# cannot link without intersphinx) are not errors.
nitpicky = False

# MyST: ```{directive}``` fences and ::: fences; "deflist" for option lists.
myst_enable_extensions = ["colon_fence", "deflist"]
# Stable anchors for "#section" links between pages.
myst_heading_anchors = 3

# -- autodoc / napoleon --------------------------------------------------------
autodoc_typehints = "description"
autodoc_member_order = "bysource"
# Docstrings use Google-style sections: Parameters: / Returns: / Raises: / Attributes:
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Render "Attributes:" sections as fields of the class, not as separate
# attribute entries: an attribute that autodoc also documents as a member
# (Context.cancelled, a property listed under "Attributes:") would otherwise be
# described twice, a "duplicate object description" warning.
napoleon_use_ivar = True

# -- HTML ----------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"flowkit {release}"
html_theme_options = {
    "description": "Durable, typed workflows on Dramatiq with SQL state.",
    "fixed_sidebar": True,
    "show_relbars": True,
}
html_static_path: list[str] = []


# -- Cross-references ------------------------------------------------------------
# The exceptions are documented once, in flowkit.errors, but the package's
# docstrings refer to them by their public top-level names (flowkit.StepTimeout).
# Resolve such references to the documented objects instead of leaving them unlinked.
def _resolve_reexported(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith("flowkit.") or target.count(".") != 1:
        return None
    documented = "flowkit.errors." + target.split(".", 1)[1]
    domain = env.get_domain("py")
    if documented not in domain.objects:
        return None
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], documented, node, contnode
    )


def setup(app: Any) -> None:
    app.connect("missing-reference", _resolve_reexported)
