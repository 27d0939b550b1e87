"""The CUDA face: launchers.py turns each contract op into launches of kernels/*.cu (shared by the `cuda`
backend on a GPU and the `cuda-sim` backend on the CPU), on launch.py's plumbing (the Device interface both
devices implement, input checks, typed arguments, the launch itself), with conv_plan.py choosing how each
convolution is cut into blocks; cupy_device.py is the GPU device, the only file that imports CuPy;
kernel_source.py finds and reads the .cu files for every compiler."""
