"""The NumPy face of the backend contract: the CPU reference every kernel is checked against, and the
CPU training path (backend.py lists every op; its parts do the work: conv.py, conv_cnhw.py and
products.py the convolutions, pooling.py and windows.py the pooling, threads.py the opt-in batch
halves, scratch.py the reused memory)."""
