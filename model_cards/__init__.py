"""Jinja model-card templates of hf_ext, shipped as the package data of ``hf_ext.model_cards``.

The files live in the repository's top-level ``model_cards/`` folder; ``setup.py`` and
``[tool.setuptools.package-dir]`` map it to ``hf_ext.model_cards`` so that the templates are found with
``importlib.resources`` in wheels and editable installs. Render them with :func:`hf_ext.hub.render_model_card`.

A component's template extends the generic one and fills its blocks::

    {% extends "base.md.j2" %}
    {% block method %}SCAR adds a sparse concept autoencoder to ...{% endblock %}
"""
