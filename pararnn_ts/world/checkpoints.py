"""World-model checkpoints for the ``world-eval`` and ``plan`` verbs: the module, the env it was trained on, checks.

A checkpoint written by ``pararnn-ts fit -c experiments/world/...`` (or ``plan --save-model``) holds the
:class:`~pararnn_ts.world.module.WorldModelModule`'s hyperparameters and weights, and the data module's
hyperparameters under ``datamodule_hyper_parameters``, whose ``env_id`` names the env it was trained on
(``plan``'s in-memory data: its length as ``num_steps``, and ``trajectories``, how it was made).
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

from ..cells.factory import require_recorded_cell
from ..outputs import read_checkpoint_file
from .collect import recorded_env
from .datamodule import TrajectoryDataModule
from .module import WorldModelModule

WRITTEN_BY = "written by pararnn-ts fit -c experiments/world/... or pararnn-ts plan --save-model"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path``, refused unless it is a :class:`WorldModelModule` one."""
    checkpoint = read_checkpoint_file(path, "--checkpoint", WRITTEN_BY)
    hparams = checkpoint.get("hyper_parameters")
    if hparams is None or "state_dict" not in checkpoint:
        raise ValueError(f"--checkpoint {path} is not a Lightning checkpoint with hyperparameters ({WRITTEN_BY})")
    class_name = str(hparams.get("_class_path", "")).rsplit(".", 1)[-1]
    if class_name and class_name != WorldModelModule.__name__:
        raise ValueError(f"{path} is a {class_name} checkpoint, not a WorldModelModule one ({WRITTEN_BY})")
    foreign = sorted(k for k in hparams if not k.startswith("_") and k not in _MODULE_ARGUMENTS)
    if foreign:
        raise ValueError(
            f"{path} is not a WorldModelModule checkpoint (its hyperparameters {foreign} are not the module's; "
            f"{WRITTEN_BY})"
        )
    return checkpoint


def checkpoint_env(checkpoint: dict[str, Any]) -> str | None:
    """The env id of the data module a checkpoint was trained with, else the one the trajectory file it read as it
    is (``env_id`` null) records; ``None`` if neither says."""
    trained = checkpoint.get("datamodule_hyper_parameters") or {}
    return recorded_env(trained["path"]) if read_as_is(trained) else trained.get("env_id")


def read_as_is(trained: dict[str, Any]) -> bool:
    """Whether the data module hyperparameters ``trained`` read a trajectory file as it is (``env_id`` null): its
    ``num_steps`` and ``num_envs`` were then unused."""
    return "env_id" in trained and trained["env_id"] is None and trained.get("path") is not None


#: the data module arguments that decide which transitions are collected and how episodes are split (but the env)
DATA_ARGUMENTS = tuple(name for name in TrajectoryDataModule.split_arguments if name != "env_id")


def checkpoint_data(checkpoint: dict[str, Any], given: dict[str, Any], path: str | Path) -> dict[str, Any] | None:
    """The data arguments (:data:`DATA_ARGUMENTS`) a checkpoint was trained with, ``None`` if it carries none; with
    ``env_id`` ``None`` (and no ``num_steps``, ``num_envs``) if it read a trajectory file as it is.

    Warns about the ``given`` ones (``None``: not given) that differ: other data or another split can put the
    checkpoint's training episodes among the test episodes it is scored on. A checkpoint trained on all of its
    data (``plan --save-model``: in-memory data, none held out) has no test episodes: it is refused unless
    ``given`` names other data (:func:`check_fresh_data`), and ``None`` is returned.
    """
    trained = checkpoint.get("datamodule_hyper_parameters") or {}
    if not held_out(trained):
        check_fresh_data(trained, given, path)
        return None
    unused = ("num_steps", "num_envs") if read_as_is(trained) else ()
    data = {name: trained[name] for name in DATA_ARGUMENTS if name in trained and name not in unused}
    if read_as_is(trained):
        data["env_id"] = None
    differ = [f"{name}={value!r} (trained: {recorded!r})" for name, value, recorded in _differing(given, data)]
    if differ:
        warnings.warn(
            f"--checkpoint {path} is scored on other data than it was trained on: {', '.join(differ)}; its test "
            "episodes may then include episodes it was trained on",
            stacklevel=2,
        )
    return data or None


def held_out(trained: dict[str, Any]) -> bool:
    """Whether the data module hyperparameters ``trained`` describe data with test episodes a scorer can rebuild:
    a collection or a file (not data in memory), split with ``test_fraction > 0``."""
    in_memory = (trained.get("trajectories") or {}).get("in_memory", False)
    return not in_memory and trained.get("test_fraction", 0.1) > 0


def check_fresh_data(trained: dict[str, Any], given: dict[str, Any], path: str | Path) -> None:
    """Refuse to score a checkpoint trained on all of its data unless ``given`` names other data: a ``path``, or
    ``num_steps`` with a ``seed`` other than the one its random episodes were collected with."""
    made = trained.get("trajectories") or {}
    seed = made.get("seed")
    if given.get("path") is not None or (
        given.get("num_steps") is not None and given.get("seed") is not None and given["seed"] != seed
    ):
        return
    if made:
        how = ", ".join(f"{name} {made[name]!r}" for name in ("policy", "seed") if name in made)
        steps = trained["num_steps"]
        trained_on = f"on all {steps} steps of its data ({how}), none held out (as plan --save-model trains)"
    else:
        trained_on = "with no test episodes held out (test_fraction=0, e.g. an older plan --save-model checkpoint)"
    other = "" if seed is None else f", S other than {seed}: the seed of the random episodes it was trained on"
    raise ValueError(
        f"--checkpoint {path} was trained {trained_on}, so there are no test episodes of its own to score it on; "
        f"pass fresh ones: --steps N --seed S (random-policy episodes{other}), or --data FILE"
    )


#: world-eval's k-step settings and the WorldModelModule hyperparameters that record them
EVALUATION_ARGUMENTS = {"context": "eval_context", "ks": "eval_ks", "stride": "eval_stride"}


def checkpoint_evaluation(checkpoint: dict[str, Any], given: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The k-step settings (:data:`EVALUATION_ARGUMENTS`) a checkpoint was validated with, those it records.

    Prints one line naming the ``given`` ones (``None``: not given) that differ: they are scored with instead.
    """
    hparams = checkpoint["hyper_parameters"]
    recorded = {name: hparams[key] for name, key in EVALUATION_ARGUMENTS.items() if key in hparams}
    if "ks" in recorded:
        recorded["ks"] = [int(k) for k in recorded["ks"]]  # a tuple, or a list from a YAML config
    differ = [
        f"--{name} {value} (its {EVALUATION_ARGUMENTS[name]}: {saved})"
        for name, value, saved in _differing(given, recorded)
    ]
    if differ:
        print(f"--checkpoint {path}: scoring with {', '.join(differ)} as given, not the checkpoint's", flush=True)
    return recorded


def _differing(given: dict[str, Any], recorded: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(name, given, recorded)`` for each ``given`` value (``None``: not given) that differs from a recorded one."""
    return [
        (name, value, recorded[name])
        for name, value in given.items()
        if value is not None and name in recorded and recorded[name] != value
    ]


def read_world_checkpoint(path: str | Path) -> tuple[WorldModelModule, str | None]:
    """The trained module at ``path`` (CPU, eval mode) and the env id it was trained on (``None``: unknown)."""
    checkpoint = load_checkpoint(path)
    require_recorded_cell(checkpoint["hyper_parameters"], f"--checkpoint {path}")
    env_id = checkpoint_env(checkpoint)
    return WorldModelModule.load_from_checkpoint(path, map_location="cpu").eval(), env_id


def env_for_checkpoint(env: str | None, trained_on: str | None, path: str | Path) -> str:
    """``--env`` when given (it must be the checkpoint's env), else the env the checkpoint was trained on."""
    if env is not None and trained_on is not None and env != trained_on:
        raise ValueError(
            f"checkpoint {path} was trained on {trained_on}; pass --env {trained_on} (or leave --env out), "
            f"not --env {env}"
        )
    if env is None and trained_on is None:
        raise ValueError(f"checkpoint {path} does not say which env it was trained on; pass --env")
    return env or trained_on


def check_sizes(module: WorldModelModule, obs_dim: int, action_dim: int, env: str, path: str | Path) -> None:
    """Refuse a model whose observation / action sizes are not ``env``'s."""
    model = (module.hparams.obs_dim, module.hparams.action_dim)
    if model != (obs_dim, action_dim):
        raise ValueError(
            f"checkpoint {path} models obs_dim, action_dim = {model}, but {env} has {(obs_dim, action_dim)}; "
            "pass the --env it was trained on"
        )


#: the keyword arguments of WorldModelModule, the only hyperparameters its checkpoints hold
_MODULE_ARGUMENTS = frozenset(inspect.signature(WorldModelModule).parameters)
