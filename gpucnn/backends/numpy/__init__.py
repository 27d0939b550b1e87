"""The NumPy face of the backend contract: the CPU reference every kernel is checked against, and the
CPU training path (backend.py lists every op; conv.py, conv_cnhw.py, windows.py and threads.py do the work)."""
