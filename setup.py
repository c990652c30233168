"""Installs deeplab_dpc: Dense Prediction Cells (Chen et al., NeurIPS 2018) in TF2 / Keras 3."""

import setuptools

setuptools.setup(
    name="deeplab_dpc",
    version="0.1.0",
    description=(
        "Dense Prediction Cell architecture search, training, evaluation and "
        "export in TensorFlow 2 / Keras 3, in the DeepLab style."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["deeplab_dpc", "deeplab_dpc.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=[
        "tensorflow-cpu>=2.16,<2.22; platform_machine=='x86_64'",
        "tensorflow>=2.16,<2.22; platform_machine!='x86_64'",
        "keras>=3.3,<4",
        "tensorflow-datasets>=4.9,<5",
        "numpy>=1.26,<3",
        "absl-py>=1.4,<3",
        "pillow>=10,<14",
        "optuna>=4.5,<6",
        "matplotlib>=3.7,<4",
        "scipy>=1.10,<2",
        "tqdm>=4.60,<5",
        "tensorboard>=2.16,<2.22",
        "google-crc32c>=1.5,<2",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "ruff>=0.5",
            "psycopg[binary]>=3.1,<4",
            "sqlalchemy>=2.1,<3",
            "optuna-dashboard>=0.15,<1",
        ],
        # psycopg 3: the driver of plain postgresql:// URLs from SQLAlchemy 2.1 on.
        "postgres": ["psycopg[binary]>=3.1,<4", "sqlalchemy>=2.1,<3"],
        "dashboard": ["optuna-dashboard>=0.15,<1"],
        "gpu": ["tensorflow[and-cuda]>=2.16,<2.22"],
    },
)
