"""Autograd Functions, one file per kernel module (``kernels/<stem>.cu``): the only callers of backend ops.

Each file owns everything of its op: the Function (backward right under forward), its ONNX emitter
(``symbolic(g, <forward's parameters>)`` on the Function, or ``not_exportable = "why"``: see
gpucnn/onnx.py), its argument parsing and checks, and its public function with PyTorch's name and
arguments, which ``gpucnn.functional`` re-exports. The ``run_*`` entry points take a ready spec and the
calling layer's name: the nn layers check their arguments once, in the constructor. Checks shared by
several ops are in checks.py, pooling's argument handling in pooling.py.
"""
