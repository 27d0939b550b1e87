// graph_step.cu: the parts of a training step that would otherwise run on the host or as array-library
// operations, so that a whole step is our kernels and can be captured into one CUDA graph
// (gpucnn/cuda_graph.py): the batch gather (with random shifts) from the resident data set, the
// loss sum, and the step counter that every per-step table is indexed by.
//
// step: a long long in device memory, the step's row in this epoch's tables. A graph is captured
// once and replayed every step, so nothing per step may be a kernel argument.
//
// gather_batch: one output element per thread per grid-stride step. Batch row b is image
//   order[step * batch_stride + b]; element (b, c, h, w) reads that image at (h + dy, w + dx), with
//   (dy, dx) its row of offsets (when max_shift > 0), or background where that falls outside.
//   The thread of each row's first element also writes the row's label.
// loss_accumulate: one thread adds the rows' losses in order in double, then adds that sum to
//   total[0]: a fixed order, so the sum is reproducible (a batch is a few hundred rows).
// step_advance: one thread, step[0] += 1.
// Reference: NumpyBackend.gather_batch, NumpyBackend.softmax_cross_entropy_accumulate (after
// NumpyBackend.softmax_cross_entropy's rows) and NumpyBackend.step_advance.
#include "common.cuh"

extern "C" __global__ void gather_batch(const real* __restrict__ images, const int* __restrict__ labels,
                                        const int* __restrict__ order, const int* __restrict__ offsets,
                                        const long long* __restrict__ step, const real* __restrict__ background,
                                        real* __restrict__ x, int* __restrict__ y, index_t batch_stride,
                                        index_t count, index_t channels, index_t height, index_t width,
                                        int max_shift) {
    const index_t plane = height * width, image = channels * plane;
    const long long first = step[0] * (long long)batch_stride;
    GRID_STRIDE_LOOP(i, count * image) {
        const index_t b = i / image, within = i % image;
        const index_t c = within / plane, h = within % plane / width, w = within % width;
        const long long row = first + b;
        const index_t source = order[row];
        index_t sh = h, sw = w;
        if (max_shift > 0) {
            sh += offsets[2 * row];
            sw += offsets[2 * row + 1];
        }
        const bool inside = sh >= 0 && sh < height && sw >= 0 && sw < width;
        x[i] = inside ? images[source * image + c * plane + sh * width + sw] : background[0];
        if (within == 0) y[b] = labels[source];
    }
}

extern "C" __global__ void loss_accumulate(const real* __restrict__ row_loss, double* __restrict__ total,
                                           index_t rows) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double sum = 0.0;
    for (index_t i = 0; i < rows; ++i) sum += (double)row_loss[i];
    total[0] += sum;
}

extern "C" __global__ void step_advance(long long* __restrict__ step) {
    if (blockIdx.x == 0 && threadIdx.x == 0) step[0] += 1;
}
