"""Fast kernels behind ``mode="fused"``: fused CPU C++ (``cpu``), Triton (``triton_fused``,
``triton_scan``) and CUDA C++ (``cuda``) backends, and the autograd wrapper they share.

Nothing here imports ``pararnn_ts.core``; backends load (and build) lazily on first use.
"""

from .fused import AUTO_ORDER, BACKENDS, KERNELS, Backend, fused_solve, select_backend, unavailable_reason

__all__ = ["AUTO_ORDER", "BACKENDS", "KERNELS", "Backend", "fused_solve", "select_backend", "unavailable_reason"]
