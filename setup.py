"""Packaging glue that pyproject.toml cannot express on its own.

``conf/`` stays at the top of the repository (Hydra's config tree, edited like any source) and
ships inside the wheel as the data package ``recon_lightning.conf`` (mapped in pyproject.toml's
``package-dir``), so ``pip install .`` finds its configs with no environment variable.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages("src"), "recon_lightning.conf"])
