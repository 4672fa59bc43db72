"""Synthetic tasks of the ParaRNN paper (Table 1): data modules and the tagger that solves them."""

from .parity import AllLengthsParity, EpochSampler, ParityDataModule, RandomLengthParity, parity_batch
from .tagger import SequenceTagger

__all__ = [
    "AllLengthsParity",
    "EpochSampler",
    "ParityDataModule",
    "RandomLengthParity",
    "SequenceTagger",
    "parity_batch",
]
