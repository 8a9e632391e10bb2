"""The package layout that pyproject.toml cannot state alone: evoray's code, and the configs, committee specs and
published genotypes of the source tree's top-level ``configs/``, ``ensembles/`` and ``populations/`` shipped inside it
as ``evoray.configs``, ``evoray.ensembles`` and ``evoray.populations``, so that an installed evoray runs every
command's default from any folder."""

from setuptools import find_packages, setup

DATA = {"evoray.configs": "configs", "evoray.ensembles": "ensembles", "evoray.populations": "populations"}

setup(
    packages=[*find_packages(include=["evoray", "evoray.*"]), *DATA],
    package_dir={"evoray": "evoray", **DATA},
)
