"""Solver core: cells protocol, Jacobian structures, Newton, linear scans, autograd."""

from .autograd import NewtonSolve, sequential_solve
from .cell import FALLBACKS, MODES, Fallback, Mode, ParaCell
from .newton import NewtonConvergenceError, SolverStats, newton_solve
from .scan import linear_scan, reverse_linear_scan
from .structure import Block, Dense, Diagonal, Structure

__all__ = [
    "FALLBACKS",
    "MODES",
    "Block",
    "Dense",
    "Diagonal",
    "Fallback",
    "Mode",
    "NewtonConvergenceError",
    "NewtonSolve",
    "ParaCell",
    "SolverStats",
    "Structure",
    "linear_scan",
    "newton_solve",
    "reverse_linear_scan",
    "sequential_solve",
]
