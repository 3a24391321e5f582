"""A CPU-only stand-in for the part of torchvision that kohya sd-scripts imports (``transforms.Compose``,
``ToTensor``, ``Normalize``, ``functional.pil_to_tensor``), for running kohya's scripts on a CPU-only machine.

PyPI's torchvision wheels for Linux link against the CUDA build of torch (``libtorch_cuda.so``), and the CPU builds
live on another index that this project's machines cannot reach, so a CPU-only venv (torch ``+cpu``) cannot import
the real package. ``bench/bench_vs_kohya.py --kohya-pythonpath bench/cpu_torchvision`` puts this folder first on
kohya's path for the CPU check only; on a GPU machine kohya gets the real torchvision. It carries no package
metadata, so transformers and diffusers see no torchvision and do not use it.
"""

from . import transforms

__all__ = ["transforms"]
__version__ = "0.0+kiln-cpu-standin"
