"""Installs the ``pcdet`` package (pure Python; box kernels are numba-compiled at run time).

torch and spconv are installed by ``make setup``, which chooses the CPU or CUDA build.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_requirements():
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#") and not ln.startswith("pytest")]


setup(
    name="pcdet",
    version="0.1.0",
    description="OpenPCDet-style 3D LiDAR perception toolkit for knowledge distillation (PointDistiller, PVD)",
    packages=find_packages(include=["pcdet", "pcdet.*", "benchmark", "benchmark.*"]),
    package_data={"pcdet": ["datasets/synthetic/*.yaml", "datasets/synthetic/*.json"]},
    python_requires=">=3.9",
    install_requires=read_requirements(),
)
