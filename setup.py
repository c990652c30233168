"""Installs deeplab_dpc: Dense Prediction Cells (Chen et al., NeurIPS 2018) in TF2 / Keras 3.

Exactly one TensorFlow distribution per machine (two write the same
`tensorflow/` package and the last one installed wins, file by file):

    pip install -e .                                   # CPU: tensorflow-cpu on x86_64
    DEEPLAB_DPC_TENSORFLOW=cuda pip install -e .       # CUDA: tensorflow[and-cuda]

An extra cannot replace a requirement (pip installs the base requirements
with every extra), so a `gpu` extra on top of `tensorflow-cpu` installed both;
the build-time variable chooses the one TensorFlow instead. tests/test_install.py
resolves both with `pip install --dry-run --report`.
"""

import os

import setuptools

TF_VERSIONS = ">=2.16,<2.22"
TENSORFLOW = {
    # TensorFlow's smaller CPU-only wheel on x86_64; `tensorflow` elsewhere
    # (aarch64 and macOS have no tensorflow-cpu of these versions).
    "cpu": [
        f"tensorflow-cpu{TF_VERSIONS}; platform_machine=='x86_64'",
        f"tensorflow{TF_VERSIONS}; platform_machine!='x86_64'",
    ],
    # The CUDA build with NVIDIA's CUDA and cuDNN wheels (TensorFlow's own
    # `and-cuda` extra; Linux only, elsewhere it is the plain `tensorflow`).
    "cuda": [f"tensorflow[and-cuda]{TF_VERSIONS}"],
}
_tensorflow = os.environ.get("DEEPLAB_DPC_TENSORFLOW", "cpu").strip() or "cpu"
if _tensorflow not in TENSORFLOW:
    raise SystemExit(
        f"DEEPLAB_DPC_TENSORFLOW: unknown {_tensorflow!r}; known: cpu (default), cuda"
    )

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
        *TENSORFLOW[_tensorflow],
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
            "pytest-xdist>=3.8,<4",
            "ruff>=0.5",
            "psycopg[binary]>=3.1,<4",
            "sqlalchemy>=2.1,<3",
            "optuna-dashboard>=0.15,<1",
        ],
        # psycopg 3: the driver of plain postgresql:// URLs from SQLAlchemy 2.1 on.
        "postgres": ["psycopg[binary]>=3.1,<4", "sqlalchemy>=2.1,<3"],
        "dashboard": ["optuna-dashboard>=0.15,<1"],
    },
)
