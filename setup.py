"""Packaging for sepkit.

``kernels/`` is installed as ``sepkit.kernels`` (never as a top-level ``kernels`` module: another
distribution owns that name)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "sepkit" / "__init__.py").read_text()).group(1)

lib_packages = find_packages(include=["sepkit", "sepkit.*"])
kernel_packages = ["sepkit.kernels"] + [
    "sepkit.kernels." + p for p in find_packages(where="kernels")
]

setup(
    name="sepkit",
    version=VERSION,
    description="Speech separation and enhancement models on fused Triton kernels",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author="The sepkit developers",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=lib_packages + kernel_packages,
    package_dir={"sepkit.kernels": "kernels"},
    package_data={"sepkit.data": ["spoken_words.txt"]},  # the spoken corpus's vocabulary
    install_requires=[
        "torch>=2.5",
        "triton>=3.2; platform_system == 'Linux'",
        "torchaudio>=2.5",
        "numpy>=1.24",
        "pyyaml>=6.0",
        "safetensors>=0.4",
        "soundfile>=0.12",
        "scipy>=1.10",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "dev": ["pytest>=7.4", "hypothesis>=6.90", "mir_eval>=0.8,<0.9", "pyroomacoustics>=0.7",
                "onnx>=1.17", "onnxscript>=0.3", "onnxruntime>=1.20"],
        "augment": ["pyroomacoustics>=0.7"],
        "export": ["onnx>=1.17", "onnxscript>=0.3", "onnxruntime>=1.20"],
        "perf": ["nvidia-ml-py>=12.535", "matplotlib>=3.7", "xformers"],
        "eval": ["pesq>=0.0.4", "pystoi>=0.4"],
    },
    entry_points={"console_scripts": ["sepkit=sepkit.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Operating System :: POSIX :: Linux",
        "Topic :: Multimedia :: Sound/Audio :: Speech",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
