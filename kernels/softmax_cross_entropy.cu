// softmax_cross_entropy.cu: fused softmax + cross-entropy, loss and gradient in one pass per row.
//
// Threads: one warp per row (blockDim.x = 128 -> 4 rows per block); lanes stride over the
// classes, and the row max and sums come from fixed-order warp butterflies, so the result is
// reproducible. Reference: NumpyBackend.softmax_cross_entropy.
// With label smoothing eps (PyTorch's torch.nn.functional.cross_entropy, unweighted):
//   row_loss[r] = (1 - eps) * (-log p[label]) + (eps / C) * sum_c (-log p[c]),
//   -log p[c] = log(sum exp(z - max)) - (z[c] - max);
//   grad = (softmax - (1 - eps) * onehot - eps / C) * inv_n.
// The gradient loop serves both (with eps == 0 its targets are exactly 1 and 0); the loss of
// eps == 0 takes its own branch (no extra sum, no multiplications by 0 that an infinite logit
// would turn into NaN): row_loss = -log p[label].
#include "common.cuh"

extern "C" __global__ void softmax_cross_entropy(const real* __restrict__ logits, const int* __restrict__ labels,
                                                 real* __restrict__ row_loss, real* __restrict__ grad,
                                                 index_t rows, index_t classes, real inv_n, real smoothing) {
    const int lane = threadIdx.x % 32;
    const index_t row = (index_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;  // a whole warp leaves together, so the shuffles stay uniform
    const real* z = logits + row * classes;
    real* g = grad + row * classes;

    real m = -real_infinity();
    for (index_t k = lane; k < classes; k += 32) m = (z[k] > m || is_nan(z[k])) ? z[k] : m;
    m = warp_max(m);
    real total = 0;
    for (index_t k = lane; k < classes; k += 32) total += real_exp(z[k] - m);
    total = warp_sum(total);
    const real log_total = real_log(total);
    const int label = labels[row];
    const real off = smoothing / (real)classes;  // every class's share of the smoothed target
    const real on = ((real)1 - smoothing) + off;  // the label's; exactly 1 and 0 when smoothing is 0
    for (index_t k = lane; k < classes; k += 32) {
        real p = real_exp(z[k] - m) / total;
        g[k] = (p - (k == label ? on : off)) * inv_n;
    }
    const real nll = log_total - (z[label] - m);
    if (smoothing == (real)0) {
        if (lane == 0) row_loss[row] = nll;
        return;
    }
    real shifted = 0;
    for (index_t k = lane; k < classes; k += 32) shifted += z[k] - m;
    shifted = warp_sum(shifted);
    // sum_c -log p[c] = C * log_total - sum_c (z[c] - m); its mean is log_total - shifted / C
    if (lane == 0) row_loss[row] = ((real)1 - smoothing) * nll + smoothing * (log_total - shifted / (real)classes);
}
