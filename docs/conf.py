"""Sphinx configuration of jaxbce's documentation.

Build the site and run every example in it (from the repository root)::

    python -m sphinx -W -b html docs docs/_build/html
    python -m sphinx -W -b doctest docs docs/_build/doctest

``tests/test_docs.py`` runs both. Links into the JAX, Flax and Optax documentation
(intersphinx) need their inventories from the network; they are fetched only when
``JAXBCE_DOCS_INTERSPHINX=1`` is set (see ``intersphinx_mapping`` below).
"""

from __future__ import annotations

import doctest
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the jaxbce of this checkout, not an installed one
sys.path.insert(0, str(DOCS / "_ext"))

# The sharding page's examples run on 8 simulated CPU devices. XLA reads this flag when JAX
# starts its backend, which no page has done yet when Sphinx reads this file.
_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()
# Keras 3 on JAX (the migration page), without TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "jax")

import jaxbce  # noqa: E402

project = "jaxbce"
author = "jaxbce contributors"
copyright = "jaxbce contributors"
version = release = jaxbce.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "jaxbce_docs",  # docs/_ext/jaxbce_docs.py: every public name has a page; code is tested
]

root_doc = "index"
exclude_patterns = ["_build", "_ext", "plots", "results", "**/.ipynb_checkpoints"]
nitpicky = False

# autodoc and napoleon: the docstrings are Google style (Args:, Returns:, References:).
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
# Show the annotations as written (``Float[ArrayLike, '*shape']``), not with ``ArrayLike``
# expanded into the union it stands for.
autodoc_type_aliases = {"ArrayLike": "ArrayLike"}
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Doctests: every example on the pages runs (``python -m sphinx -b doctest``). They run with
# the repository root as the working directory, so that the pages can read the committed
# results (benchmarks/results/, docs/results/).
doctest_global_setup = f"""
import os as _os
_doctest_cwd = _os.getcwd()
_os.chdir({str(ROOT)!r})
"""
doctest_global_cleanup = """
_os.chdir(_doctest_cwd)
"""
doctest_test_doctest_blocks = "default"
# Arrays print over as many lines as their width needs: output is compared up to
# whitespace. Exception messages are compared too (Sphinx's default ignores them).
doctest_default_flags = (
    doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE | doctest.DONT_ACCEPT_TRUE_FOR_1
)

# Intersphinx. The inventories live on the projects' sites; CI and the test that builds
# these pages reach package registries only, and a failed fetch is a warning, which -W
# makes an error. So the mapping is used only on request (JAXBCE_DOCS_INTERSPHINX=1, e.g.
# when publishing the site from a machine with network access); otherwise references such
# as :func:`jax.jit` render as code without a link.
intersphinx_mapping: dict[str, tuple[str, None]] = {}
if os.environ.get("JAXBCE_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "jax": ("https://docs.jax.dev/en/latest", None),
        "flax": ("https://flax.readthedocs.io/en/latest", None),
        "optax": ("https://optax.readthedocs.io/en/latest", None),
        "numpy": ("https://numpy.org/doc/stable", None),
    }
intersphinx_timeout = 10

html_theme = "furo"
html_title = f"jaxbce {release}"
html_static_path = ["_static"]
html_css_files = ["jaxbce.css"]
pygments_style = "sphinx"
