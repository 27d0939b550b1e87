// optimizers.cu: fused elementwise parameter updates (SGD with momentum/Nesterov, Adam/AdamW).
//
// Threads: one parameter element per thread per grid-stride step; updates are in place.
// Reference: NumpyBackend.sgd_update and NumpyBackend.adam_update (PyTorch's formulas).
#include "common.cuh"

extern "C" __global__ void sgd_update(real* __restrict__ param, const real* __restrict__ grad, real lr,
                                      real weight_decay, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real g = grad[i] + weight_decay * param[i];
        param[i] -= lr * g;
    }
}

// v = momentum * v + g;  step along v, or along g + momentum * v with Nesterov.
extern "C" __global__ void sgd_momentum_update(real* __restrict__ param, const real* __restrict__ grad,
                                               real* __restrict__ velocity, real lr, real momentum,
                                               real weight_decay, int nesterov, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real g = grad[i] + weight_decay * param[i];
        real v = momentum * velocity[i] + g;
        velocity[i] = v;
        param[i] -= lr * (nesterov ? g + momentum * v : v);
    }
}

// step_size = lr / (1 - beta1^t) and inv_bias2_sqrt = 1 / sqrt(1 - beta2^t) come from the host.
// decoupled (AdamW) shrinks the parameter by (1 - lr*wd) instead of adding wd*p to the gradient.
extern "C" __global__ void adam_update(real* __restrict__ param, const real* __restrict__ grad,
                                       real* __restrict__ m, real* __restrict__ v, real lr, real beta1,
                                       real beta2, real eps, real weight_decay, int decoupled, real step_size,
                                       real inv_bias2_sqrt, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        real p = param[i];
        real g = grad[i];
        if (decoupled) {
            p *= (real)1 - lr * weight_decay;
        } else {
            g += weight_decay * p;
        }
        real mi = beta1 * m[i] + ((real)1 - beta1) * g;
        real vi = beta2 * v[i] + ((real)1 - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] = p - step_size * mi / (real_sqrt(vi) * inv_bias2_sqrt + eps);
    }
}
