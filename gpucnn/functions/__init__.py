"""Autograd Functions, one file per kernel module (``kernels/<stem>.cu``): the only callers of backend ops.

Each Function's backward sits right under its forward; the public wrappers with PyTorch's names
and argument order are in ``gpucnn.functional``.
"""
