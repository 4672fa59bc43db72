"""ParaGRU, ParaLSTM and a worked example of a user-defined cell."""

from .gru import ParaGRU
from .lstm import ParaLSTM
from .oscillator import RotationOscillator

__all__ = ["ParaGRU", "ParaLSTM", "RotationOscillator"]
