// optimizers.cu: fused elementwise parameter updates (SGD with momentum/Nesterov, Adam/AdamW), one
// tensor per launch or every tensor of a parameter list in one launch (the *_many kernels).
//
// Threads: one parameter element per thread per grid-stride step; updates are in place.
// *_many: a table on the device holds each tensor's pointers and size and, as a prefix sum computed
// on the host, the first block of each tensor; block b updates elements [c*1024, (c+1)*1024) of the
// tensor t whose block range holds b (c = b - first block of t), four per thread. Each element gets
// exactly the arithmetic of the one-tensor kernel (the shared *_step functions): bit-identical.
// *_many_stepped: the same, with the hyper-parameters read from row step[0] of a per-step table in
// device memory (a CUDA graph replays one launch whose learning rate changes every step).
// Reference: NumpyBackend.sgd_update and NumpyBackend.adam_update (PyTorch's formulas);
// NumpyBackend.sgd_update_many / adam_update_many loop over them; *_many_stepped read a table row.
#include "common.cuh"

__device__ __forceinline__ void sgd_step(real* param, const real* grad, index_t i, real lr, real weight_decay) {
    real g = grad[i] + weight_decay * param[i];
    param[i] -= lr * g;
}

// v = momentum * v + g;  step along v, or along g + momentum * v with Nesterov.
__device__ __forceinline__ void sgd_momentum_step(real* param, const real* grad, real* velocity, index_t i, real lr,
                                                  real momentum, real weight_decay, int nesterov) {
    real g = grad[i] + weight_decay * param[i];
    real v = momentum * velocity[i] + g;
    velocity[i] = v;
    param[i] -= lr * (nesterov ? g + momentum * v : v);
}

// step_size = lr / (1 - beta1^t) and inv_bias2_sqrt = 1 / sqrt(1 - beta2^t) come from the host.
// decoupled (AdamW) shrinks the parameter by (1 - lr*wd) instead of adding wd*p to the gradient.
__device__ __forceinline__ void adam_step(real* param, const real* grad, real* m, real* v, index_t i, real lr,
                                          real beta1, real beta2, real eps, real weight_decay, int decoupled,
                                          real step_size, real inv_bias2_sqrt) {
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

extern "C" __global__ void sgd_update(real* __restrict__ param, const real* __restrict__ grad, real lr,
                                      real weight_decay, index_t n) {
    GRID_STRIDE_LOOP(i, n) { sgd_step(param, grad, i, lr, weight_decay); }
}

extern "C" __global__ void sgd_momentum_update(real* __restrict__ param, const real* __restrict__ grad,
                                               real* __restrict__ velocity, real lr, real momentum,
                                               real weight_decay, int nesterov, index_t n) {
    GRID_STRIDE_LOOP(i, n) { sgd_momentum_step(param, grad, velocity, i, lr, momentum, weight_decay, nesterov); }
}

extern "C" __global__ void adam_update(real* __restrict__ param, const real* __restrict__ grad,
                                       real* __restrict__ m, real* __restrict__ v, real lr, real beta1,
                                       real beta2, real eps, real weight_decay, int decoupled, real step_size,
                                       real inv_bias2_sqrt, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        adam_step(param, grad, m, v, i, lr, beta1, beta2, eps, weight_decay, decoupled, step_size, inv_bias2_sqrt);
    }
}

// ----------------------------------------------------------------------------- every tensor in one launch
#define MANY_CHUNK 1024  // elements per block: 4 per thread of 256

// The table of T tensors: `arrays` rows of T pointers (param, grad, then the state arrays), T sizes,
// and T+1 first-block indices (the last one is the grid size). Finds block b's tensor and chunk.
struct ManyTable {
    const long long* table;
    int tensors, arrays;

    __device__ int tensor_of(long long block) const {
        const long long* first = table + (arrays + 1) * (long long)tensors;
        int lo = 0, hi = tensors - 1;  // the last t with first[t] <= block
        while (lo < hi) {
            const int mid = (lo + hi + 1) / 2;
            if (first[mid] <= block) lo = mid; else hi = mid - 1;
        }
        return lo;
    }
    __device__ real* array(int which, int t) const { return reinterpret_cast<real*>(table[which * tensors + t]); }
    __device__ long long size(int t) const { return table[arrays * tensors + t]; }
    __device__ long long first_block(int t) const { return table[(arrays + 1) * tensors + t]; }
};

// Calls step(param, grad, state0, state1, i) for each element of this block's chunk.
template <class Step>
__device__ __forceinline__ void for_chunk(const ManyTable& many, Step step) {
    const int t = many.tensor_of(blockIdx.x);
    const long long begin = (blockIdx.x - many.first_block(t)) * (long long)MANY_CHUNK;
    const long long end = begin + MANY_CHUNK < many.size(t) ? begin + MANY_CHUNK : many.size(t);
    real* param = many.array(0, t);
    const real* grad = many.array(1, t);
    real* state0 = many.arrays > 2 ? many.array(2, t) : nullptr;
    real* state1 = many.arrays > 3 ? many.array(3, t) : nullptr;
    for (long long i = begin + threadIdx.x; i < end; i += blockDim.x) step(param, grad, state0, state1, (index_t)i);
}

// table rows: params, grads[, velocities]; momentum is used only with velocities (arrays == 3)
__device__ __forceinline__ void sgd_many(const ManyTable& many, real lr, real momentum, real weight_decay,
                                         int nesterov) {
    if (many.arrays == 2) {
        for_chunk(many, [&](real* p, const real* g, real*, real*, index_t i) { sgd_step(p, g, i, lr, weight_decay); });
    } else {
        for_chunk(many, [&](real* p, const real* g, real* velocity, real*, index_t i) {
            sgd_momentum_step(p, g, velocity, i, lr, momentum, weight_decay, nesterov);
        });
    }
}

extern "C" __global__ void sgd_update_many(const long long* __restrict__ table, int tensors, int arrays, real lr,
                                           real momentum, real weight_decay, int nesterov) {
    sgd_many(ManyTable{table, tensors, arrays}, lr, momentum, weight_decay, nesterov);
}

// hyper: (steps, SGD_HYPER) rows of lr, momentum, weight_decay
#define SGD_HYPER 3
extern "C" __global__ void sgd_update_many_stepped(const long long* __restrict__ table, int tensors, int arrays,
                                                   const real* __restrict__ hyper, const long long* __restrict__ step,
                                                   int nesterov) {
    const real* row = hyper + step[0] * SGD_HYPER;
    sgd_many(ManyTable{table, tensors, arrays}, row[0], row[1], row[2], nesterov);
}

// table rows: params, grads, m, v
__device__ __forceinline__ void adam_many(const ManyTable& many, real lr, real beta1, real beta2, real eps,
                                          real weight_decay, int decoupled, real step_size, real inv_bias2_sqrt) {
    for_chunk(many, [&](real* p, const real* g, real* m, real* v, index_t i) {
        adam_step(p, g, m, v, i, lr, beta1, beta2, eps, weight_decay, decoupled, step_size, inv_bias2_sqrt);
    });
}

extern "C" __global__ void adam_update_many(const long long* __restrict__ table, int tensors, real lr, real beta1,
                                            real beta2, real eps, real weight_decay, int decoupled, real step_size,
                                            real inv_bias2_sqrt) {
    adam_many(ManyTable{table, tensors, 4}, lr, beta1, beta2, eps, weight_decay, decoupled, step_size,
              inv_bias2_sqrt);
}

// hyper: (steps, ADAM_HYPER) rows of lr, beta1, beta2, eps, weight_decay, step_size, inv_bias2_sqrt
#define ADAM_HYPER 7
extern "C" __global__ void adam_update_many_stepped(const long long* __restrict__ table, int tensors,
                                                    const real* __restrict__ hyper,
                                                    const long long* __restrict__ step, int decoupled) {
    const real* row = hyper + step[0] * ADAM_HYPER;
    adam_many(ManyTable{table, tensors, 4}, row[0], row[1], row[2], row[3], row[4], decoupled, row[5], row[6]);
}
