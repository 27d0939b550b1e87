"""The define-by-run core: Tensor (tensor.py), Function and the backward walk (autograd.py), and the
Functions behind Tensor's own operators: arithmetic, elementwise math and reductions (tensor_ops.py),
and the shape ops that only move or select data (shape_ops.py). They import each other: the one
import cycle in gpucnn, as in every define-by-run engine (micrograd, DeZero). No backend logic, no CuPy."""
