"""The matrix products both im2col layouts (conv.py, conv_cnhw.py) run, shaped for OpenBLAS: the
filters times a chunk's columns, and the weight gradient's sum over a long axis."""

from __future__ import annotations

import numpy as np


def products_over_long_axis(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a: (G, R, L), b: (G, K, L) -> (G, K, R) = b @ a.T, summed over the long axis L.

    When the result is tiny (a first conv layer's weight gradient: 6 x 25) and L long, OpenBLAS
    cannot split the product over threads and streams L from memory on one core; summing
    products of 1024-long blocks (in block order, so the result is reproducible) runs about
    2.5x faster there. Otherwise it is the plain product, in the orientation OpenBLAS runs
    fastest for these shapes ((a @ b.T).T, about 1.5x faster than b @ a.T).
    """
    g, r, length = a.shape
    k = b.shape[1]
    block = 1024
    blocks = length // block
    if r * k > 1024 or blocks < 4:
        return np.matmul(a, b.transpose(0, 2, 1)).transpose(0, 2, 1)
    head = blocks * block
    total = np.matmul(a[:, :, :head].reshape(g, r, blocks, block).transpose(0, 2, 1, 3),
                      b[:, :, :head].reshape(g, k, blocks, block).transpose(0, 2, 3, 1)).sum(axis=1)
    if head < length:
        total += np.matmul(a[:, :, head:], b[:, :, head:].transpose(0, 2, 1))
    return total.transpose(0, 2, 1)


def filter_product(w_mat: np.ndarray, cols: np.ndarray, out: np.ndarray) -> np.ndarray:
    """w_mat: (G, K, R) @ cols: (G, R, L) -> out: (G, K, L).

    For a few filters and a long L (LeNet's first layer: 6 x 25 @ 25 x 25088 for 32 images)
    OpenBLAS runs one call about 1.5x slower than the same product over column blocks of 4096
    (each block's panel of cols stays in L2): LeNet-5 inference at batch 1024 got 15% faster.
    """
    g, k, r = w_mat.shape
    length = cols.shape[2]
    if k > 8 or length <= 2 * 4096:
        return np.matmul(w_mat, cols, out=out)
    for start in range(0, length, 4096):
        np.matmul(w_mat, cols[:, :, start:start + 4096], out=out[:, :, start:start + 4096])
    return out
