"""Package layout that ``pyproject.toml`` alone cannot express (all metadata lives in ``pyproject.toml``).

The model-card templates live in the top-level folder ``model_cards/`` (a fixed part of the repo layout) but
ship as the subpackage ``hf_ext.model_cards``, so that ``importlib.resources.files("hf_ext.model_cards")``
finds them in a wheel and in an editable install alike. pyproject's ``packages.find`` cannot add a package
that lives outside ``hf_ext/``, and an explicit ``packages`` list would need an edit for every new
subpackage, so the list is computed here: every (namespace) package under ``hf_ext/``, plus
``hf_ext.model_cards``, which ``[tool.setuptools.package-dir]`` in pyproject maps to ``model_cards/``.
"""

from setuptools import find_namespace_packages, setup

setup(packages=[*find_namespace_packages(include=["hf_ext", "hf_ext.*"], exclude=["*.__pycache__"]), "hf_ext.model_cards"])
