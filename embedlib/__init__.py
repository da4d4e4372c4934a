"""embedlib: the embedding layer, implemented twice and tested.

Choose a backend by import; both expose the same names with the same meaning::

    from embedlib import numpy as el   # NumPy arrays, CPU
    from embedlib import torch as el   # torch tensors, CPU or CUDA, differentiable

Importing ``embedlib`` alone loads neither NumPy-heavy helpers nor PyTorch.
"""
from embedlib._version import __version__

__all__ = ["__version__"]
