"""World models: Gymnasium trajectories, action-conditioned ParaRNN dynamics (one parallel solve per imagined
rollout), baselines and k-step evaluation, the learned model as a ``gymnasium.Env``, and CEM/MPPI planning.
Needs the ``world`` extra."""

from ..extras import require_extra

require_extra("pararnn_ts.world", "world", ("gymnasium",))

from .baselines import MLPEnsemble, persistence, torch_gru_model
from .collect import Trajectories, collect, encode_actions
from .datamodule import TrajectoryDataModule
from .env import Outcome, WorldModelEnv
from .evaluate import k_step_errors
from .model import DynamicsModel, Prediction
from .module import WorldModelModule
from .planners import CEMPlanner, MPPIPlanner
from .vector_env import ImaginedVectorEnv, rollout

__all__ = [
    "CEMPlanner",
    "ImaginedVectorEnv",
    "MPPIPlanner",
    "Outcome",
    "WorldModelEnv",
    "rollout",
    "DynamicsModel",
    "MLPEnsemble",
    "Prediction",
    "Trajectories",
    "TrajectoryDataModule",
    "WorldModelModule",
    "collect",
    "encode_actions",
    "k_step_errors",
    "persistence",
    "torch_gru_model",
]
