"""Blocks built on cells: layers, sequence mixers, the LM backbone and baselines."""

from .backbone import MIXERS, Block, LanguageModel, build_mixer
from .conv import CausalConv1d
from .headwise_linear import HeadwiseLinear
from .linear_rnn import GatedLinearRNN
from .mixers import AttentionMixer, Mamba2Mixer, ParaRNNMixer
from .mlp import SwiGLU
from .norms import GatedRMSNorm, RMSNorm
from .ssd import ssd_chunked, ssd_sequential, ssd_step

__all__ = [
    "MIXERS",
    "AttentionMixer",
    "Block",
    "CausalConv1d",
    "GatedLinearRNN",
    "GatedRMSNorm",
    "HeadwiseLinear",
    "LanguageModel",
    "Mamba2Mixer",
    "ParaRNNMixer",
    "RMSNorm",
    "SwiGLU",
    "build_mixer",
    "ssd_chunked",
    "ssd_sequential",
    "ssd_step",
]
