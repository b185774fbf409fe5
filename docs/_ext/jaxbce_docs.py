"""Checks that keep jaxbce's documentation honest, as warnings (``sphinx-build -W`` fails).

* Coverage: every name in ``jaxbce.__all__`` is documented as ``jaxbce.<name>`` (an
  ``autofunction`` on the API page), and ``python -m jaxbce.check`` has its ``program``
  entry. (``sphinx.ext.coverage`` cannot do this: it skips objects whose ``__module__`` is
  not the module it inspects, and every public function lives in a private module.)
* Executed examples: every code block written on the pages is a doctest (``>>>`` blocks,
  ``.. doctest::``, ``.. testcode::``/``.. testoutput::``), except ``console`` blocks, which
  are shell commands (``tests/test_docs.py`` checks that the files and flags they name
  exist). Blocks inside docstrings, rendered by autodoc, are not pages' code and are not
  checked here.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

logger = logging.getLogger(__name__)

#: Languages of code blocks that are not Python and so cannot be doctests.
SHELL_LANGUAGES = frozenset({"console"})
#: The self-check's program name, as the API page declares it with ``.. program::``.
CHECK_PROGRAM = "python -m jaxbce.check"


def check_code_blocks(app: Sphinx, doctree: nodes.document) -> None:
    """Warns about a page's code block that is neither a doctest nor a shell command."""
    for node in doctree.findall(nodes.literal_block):
        source = node.source or doctree.get("source") or ""
        if "docstring of" in source:
            continue  # rendered from a docstring by autodoc
        if node.get("testnodetype"):
            continue  # .. doctest:: / .. testcode:: / .. testoutput::
        language = node.get("language", "default")
        if language in SHELL_LANGUAGES:
            continue
        logger.warning(
            "code block (language %r) is not a doctest: write it as '>>>' lines, "
            "'.. doctest::' or '.. testcode::', or as a 'console' block if it is a shell "
            "command",
            language,
            location=node,
        )


def check_public_names(app: Sphinx, env: BuildEnvironment) -> None:
    """Warns for every public name of jaxbce that no page documents."""
    import jaxbce

    documented = set(env.get_domain("py").objects)
    for name in jaxbce.__all__:
        if f"jaxbce.{name}" not in documented:
            logger.warning(
                "jaxbce.%s is in jaxbce.__all__ but has no page: add it to api.rst", name
            )
    # The std domain records a program's name with its spaces as hyphens.
    programs = {prog for prog, _ in env.get_domain("std").progoptions}
    if CHECK_PROGRAM.replace(" ", "-") not in programs:
        logger.warning("%r has no '.. program::' entry with its options", CHECK_PROGRAM)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("doctree-read", check_code_blocks)
    app.connect("env-check-consistency", check_public_names)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
