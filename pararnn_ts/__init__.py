"""pararnn_ts: nonlinear RNNs trained in parallel over the sequence with Newton's method."""

from .cells import ParaGRU, ParaLSTM, RotationOscillator
from .core import Block, Dense, Diagonal, NewtonConvergenceError, ParaCell, SolverStats

__version__ = "0.1.0"

__all__ = [
    "Block",
    "Dense",
    "Diagonal",
    "NewtonConvergenceError",
    "ParaCell",
    "ParaGRU",
    "ParaLSTM",
    "RotationOscillator",
    "SolverStats",
]
