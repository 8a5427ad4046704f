"""Skin-lesion classification pipeline: the helpers behind the notebooks in `notebooks/`.

Run the whole pipeline with `python -m lib run params/demo.yaml`; see README.md.
"""
