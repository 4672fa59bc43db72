"""Model-predictive control with a learned ParaRNN world model: collect → train → plan, on a budget of real steps.

    pararnn-ts plan --env Pendulum-v1                     # writes runs/plan/Pendulum-v1_mpc.json and .png
    pararnn-ts plan --checkpoint runs/world_pendulum/version_0/checkpoints/CKPT.ckpt --eval-episodes 5 --video
    pararnn-ts plan --env Pendulum-v1 --out experiments/world/results/pendulum_mpc.json --overwrite

(the last one regenerates the committed result; the other JSONs there add ``--env InvertedPendulum-v5``
and ``--reward known``, see their ``settings``).

The loop (PETS-style, with one ParaRNN dynamics model instead of an ensemble):

1. collect ``--initial-steps`` real steps with uniform random actions
   (:func:`~pararnn_ts.world.collect.collect`);
2. train a :class:`~pararnn_ts.world.module.WorldModelModule` on all data so far (a Lightning
   ``Trainer``, ``--train-steps`` gradient steps, as many epochs as that makes; the model keeps
   its weights from one round to the next);
3. run the planner (:class:`~pararnn_ts.world.planners.CEMPlanner` or ``MPPIPlanner``) for whole real
   episodes until they add up to ``--round-steps`` steps, and add their transitions to the data;
4. repeat 2–3 until ``--budget-steps`` real steps are used, train once more on all of them, then
   evaluate the planner over ``--eval-episodes`` episodes on seeds never used before and report
   the mean ± std return.

The budget is exact: the episode that reaches it is cut there. Its transitions are trained on, but its
return is not a whole episode's, so a round's ``episode_returns`` and ``mean_return`` hold whole episodes
only and the cut one is reported apart (``cut_episode``: its steps and partial return; ``mean_return`` is
``null`` for a round without a whole episode).

With ``--reward known`` the planner scores plans with the env's true reward and termination
functions from :data:`KNOWN_REWARDS` (Pendulum-v1 never terminates), and uses the model for the
dynamics only, as PETS does; the default ``learned`` uses the model's reward and termination heads.

With ``--checkpoint`` (a ``pararnn-ts fit -c experiments/world/...`` or ``--save-model`` checkpoint)
there is no collection and no training: the planner is evaluated with that model, on the env the
checkpoint was trained on unless ``--env`` says otherwise (a different env is refused).

Writes ``--out`` (JSON: settings, per-round returns and times, evaluation returns; default
``runs/plan/<env>_mpc.json``), a plot of the return per round next to it (``.png``), ``--save-model``
a checkpoint, and with ``--video`` the first evaluation episode as a GIF (``render_mode="rgb_array"``,
imageio). Existing files are refused, before anything runs, unless ``--overwrite``, and so are names
that coincide (``--out report.png``). With ``--checkpoint`` the report's settings are the ones used:
the checkpoint's model, and ``null`` for the training settings. A ``--save-model`` checkpoint records
its data as it was (all steps, random and planner episodes, none held out): ``world-eval`` scores it
on fresh episodes (``--steps`` and ``--seed``, or ``--data``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from ..outputs import machine, refuse_existing
from .checkpoints import check_sizes, checkpoint_env, env_for_checkpoint, load_checkpoint, read_world_checkpoint
from .collect import Trajectories, action_dim, collect, flatten_fix_cli, make_env
from .datamodule import TrajectoryDataModule
from .env import RewardFn, TerminationFn
from .module import WorldModelModule
from .planners import CEMPlanner, MPPIPlanner, SamplingPlanner

#: evaluation episodes are seeded from here on, apart from every seed the loop trains on
EVAL_SEED_BASE = 1_000_000


# ---- known rewards ----------------------------------------------------------------------------
class KnownReward(NamedTuple):
    """An env's true reward and termination as functions of ``(obs, action, next_obs)`` torch tensors
    (:func:`never_terminates` for an env that has no termination)."""

    reward_fn: RewardFn | None
    termination_fn: TerminationFn | None


def never_terminates(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """The termination of an env that never terminates (e.g. Pendulum-v1): ``False`` ``(...)`` for every transition."""
    return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)


def pendulum_reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Pendulum-v1: ``−(θ² + 0.1 θ̇² + 0.001 u²)`` of the state before the step, ``θ`` in ``[−π, π)``, ``|u| ≤ 2``."""
    theta = torch.atan2(obs[..., 1], obs[..., 0])
    torque = action[..., 0].clamp(-2.0, 2.0)
    return -(theta**2 + 0.1 * obs[..., 2] ** 2 + 0.001 * torque**2)


def inverted_pendulum_terminated(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """InvertedPendulum-v5: the pole angle leaves ``[−0.2, 0.2]`` or the next observation is not finite."""
    return ~torch.isfinite(next_obs).all(-1) | (next_obs[..., 1].abs() > 0.2)


def inverted_pendulum_reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """InvertedPendulum-v5: 1 per step the pole stays up, 0 on the step it falls."""
    return (~inverted_pendulum_terminated(obs, action, next_obs)).to(next_obs.dtype)


#: true reward functions for ``--reward known``
KNOWN_REWARDS: dict[str, KnownReward] = {
    "Pendulum-v1": KnownReward(pendulum_reward, never_terminates),
    "InvertedPendulum-v5": KnownReward(inverted_pendulum_reward, inverted_pendulum_terminated),
}


# ---- settings ---------------------------------------------------------------------------------
#: settings that must be >= 1
_POSITIVE = (
    "budget_steps",
    "initial_steps",
    "horizon",
    "population",
    "iterations",
    "context",
    "round_steps",
    "train_steps",
    "threads",
)
#: settings that only matter for collection and training, unused with a checkpoint
_TRAINING = (
    "save_model",
    "hidden_size",
    "num_layers",
    "cell",
    "train_steps",
    "budget_steps",
    "initial_steps",
    "round_steps",
    "window",
    "batch_size",
    "lr",
)


def _flag(default: Any, help: str = "") -> Any:
    """A settings field with its ``--help`` text."""
    return field(default=default, metadata={"help": help})


@dataclass
class MPCSettings:
    """Everything the loop does; each field is a ``--flag`` of :func:`main` (``_`` → ``-``)."""

    env: str | None = _flag(
        None, "Gymnasium env id (Box observations; Box or Discrete actions); None: the --checkpoint's, else Pendulum-v1"
    )
    budget_steps: int = _flag(3600, "real env steps in all, the random ones included")
    initial_steps: int = _flag(2000, "random-policy steps first (at most the budget)")
    eval_episodes: int = _flag(10, "real episodes the final planner is scored on (fresh seeds)")
    planner: str = _flag("cem", "CEMPlanner or MPPIPlanner")
    horizon: int = _flag(25, "planned steps")
    population: int = _flag(200, "candidate plans per refit, scored in one parallel solve")
    iterations: int = _flag(4, "refits per planned step")
    elites: int = _flag(20, "CEM: candidates the plan distribution is refitted to")
    temperature: float = _flag(1.0, "MPPI: softmax temperature of the returns")
    context: int = _flag(4, "real observations the model sees before each plan")
    reward: str = _flag("learned", "learned: the model's heads; known: the env's true reward (model = dynamics only)")
    cell: str = _flag("gru", "ParaGRU or ParaLSTM dynamics model")
    hidden_size: int = _flag(48, "model width")
    num_layers: int = _flag(2, "model blocks")
    round_steps: int = _flag(
        200,
        "real planner steps per round, at least: whole episodes, except the one that reaches --budget-steps, "
        "which is cut there and left out of the round's mean return (reported as cut_episode)",
    )
    train_steps: int = _flag(600, "gradient steps per round on all data so far (the model keeps its weights)")
    window: int = _flag(32, "steps per training window")
    batch_size: int = _flag(32, "windows per batch")
    lr: float = _flag(3e-3, "AdamW learning rate")
    seed: int = _flag(0, "seeds data collection, training, planning and (apart) the evaluation episodes")
    threads: int = _flag(1, "torch CPU threads (more oversubscribes a shared CPU)")
    checkpoint: str | None = _flag(
        None, "plan with this trained WorldModelModule (its env unless --env): no collection, no training"
    )
    save_model: str | None = _flag(None, "write the trained module's checkpoint here")
    video: bool = _flag(False, "record the first evaluation episode as a GIF next to --out")
    out: str | None = _flag(None, "JSON report, the plot next to it (.png); None: runs/plan/<env>_mpc.json")
    overwrite: bool = _flag(False, "replace --out, its .png / .gif and --save-model when they exist")

    def __post_init__(self) -> None:
        if self.checkpoint is not None:
            trained_on = checkpoint_env(load_checkpoint(self.checkpoint))
            self.env = env_for_checkpoint(self.env, trained_on, self.checkpoint)
            self._warn_unused()
        self.env = self.env or "Pendulum-v1"
        self.out = self.out or f"runs/plan/{self.env.replace('/', '_')}_mpc.json"
        if self.planner not in PLANNERS:
            raise ValueError(f"planner={self.planner!r} is not one of {tuple(PLANNERS)}")
        if self.reward not in ("learned", "known"):
            raise ValueError(f"reward={self.reward!r} is not 'learned' or 'known'")
        if self.reward == "known" and self.env not in KNOWN_REWARDS:
            raise ValueError(
                f"reward='known' has no true reward for {self.env!r}; known: {sorted(KNOWN_REWARDS)}; "
                "use --reward learned"
            )
        for name in _POSITIVE:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_episodes < 0:
            raise ValueError(f"eval_episodes must be >= 0, got {self.eval_episodes}")
        self.outputs()  # output files that coincide: refused before any work

    def _warn_unused(self) -> None:
        """Warn once about the training settings given with a checkpoint (those off their defaults)."""
        unused = [
            f"--{f.name.replace('_', '-')}"
            for f in fields(self)
            if f.name in _TRAINING and getattr(self, f.name) != f.default
        ]
        if unused:
            warnings.warn(
                f"--checkpoint {self.checkpoint}: no collection or training, so {', '.join(unused)} "
                f"{'is' if len(unused) == 1 else 'are'} ignored",
                stacklevel=4,
            )

    def outputs(self) -> dict[Path, str]:
        """The files the run writes, each with the flag that names it; refused if two of them are one file."""
        out = Path(self.out)
        files = [(out, "--out", "the JSON report (--out)"), (out.with_suffix(".png"), "--out", "its plot (.png)")]
        if self.video and self.eval_episodes > 0:
            files.append((out.with_suffix(".gif"), "--out", "the --video GIF (.gif)"))
        if self.save_model and self.checkpoint is None:
            files.append((Path(self.save_model), "--save-model", "the --save-model checkpoint"))
        named: dict[Path, str] = {}
        for path, flag, what in files:
            if path in named:
                fix = f"--out {out.with_suffix('.json')}" if flag == "--out" else "--save-model a .ckpt of its own"
                raise ValueError(f"{named[path]} and {what} would both be written to {path}; pass {fix}")
            named[path] = what
        return {path: flag for path, flag, _ in files}

    def used(self, module: WorldModelModule) -> dict[str, Any]:
        """The settings as the run used them: with a checkpoint, its model's (``cell``, ``hidden_size``,
        ``num_layers``, ``lr``), and ``None`` for the other training settings, which it does not use."""
        settings = asdict(self)
        if self.checkpoint is not None:
            settings |= dict.fromkeys(_TRAINING)
            settings |= {name: module.hparams[name] for name in ("cell", "hidden_size", "num_layers", "lr")}
        return settings


PLANNERS: dict[str, type[SamplingPlanner]] = {"cem": CEMPlanner, "mppi": MPPIPlanner}


def make_planner(settings: MPCSettings, model: torch.nn.Module, env: gym.Env) -> SamplingPlanner:
    """The planner of ``settings`` over ``model`` for the real ``env``'s spaces (the known reward when asked for)."""
    known = KNOWN_REWARDS[settings.env] if settings.reward == "known" else KnownReward(None, None)
    common = {
        "horizon": settings.horizon,
        "population": settings.population,
        "iterations": settings.iterations,
        "context": settings.context,
        "reward_fn": known.reward_fn,
        "termination_fn": known.termination_fn,
        "seed": settings.seed,
        "observation_space": env.observation_space,
    }
    if settings.planner == "cem":
        return CEMPlanner(model, env.action_space, elites=settings.elites, **common)
    return MPPIPlanner(model, env.action_space, temperature=settings.temperature, **common)


# ---- real episodes ----------------------------------------------------------------------------
class EpisodeResult(NamedTuple):
    """A real episode driven by the planner: its transitions, return and frames (with ``render_mode``)."""

    data: Trajectories
    total: float
    frames: list[np.ndarray]


def play_episode(
    env: gym.Env, planner: SamplingPlanner, seed: int, context: int, max_steps: int | None = None
) -> EpisodeResult:
    """Run ``planner`` in the real ``env`` from ``reset(seed)`` until the episode ends (or ``max_steps``)."""
    planner.reset()
    obs, _ = env.reset(seed=seed)
    history_obs, history_actions = deque([obs], maxlen=context), deque(maxlen=context - 1)
    rows, frames = [], []
    while max_steps is None or len(rows) < max_steps:
        if env.render_mode == "rgb_array":
            frames.append(env.render())
        action = planner.plan(np.stack(history_obs), np.array(list(history_actions)))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, reward, next_obs, terminated, truncated))
        history_obs.append(next_obs)
        history_actions.append(action)
        obs = next_obs
        if terminated or truncated:
            break
    return EpisodeResult(_trajectories(rows, env, planner), float(sum(r[2] for r in rows)), frames)


def _trajectories(rows: list[tuple], env: gym.Env, planner: SamplingPlanner) -> Trajectories:
    """One episode's transitions in the layout of :mod:`~pararnn_ts.world.collect`."""
    obs, action, reward, next_obs, terminated, truncated = (np.stack(c) for c in zip(*rows, strict=True))
    return Trajectories(
        obs=obs.reshape(len(rows), -1).astype(np.float32),
        action=action.astype(np.int64 if isinstance(env.action_space, gym.spaces.Discrete) else np.float32),
        reward=reward.astype(np.float32),
        next_obs=next_obs.reshape(len(rows), -1).astype(np.float32),
        terminated=terminated.astype(bool),
        truncated=truncated.astype(bool),
        episode=np.zeros(len(rows), dtype=np.int64),
        meta={"policy": type(planner).__name__},
    )


# ---- training ---------------------------------------------------------------------------------
def train(module: WorldModelModule, data: Trajectories, settings: MPCSettings) -> pl.Trainer:
    """Fit ``module`` on all of ``data`` for ``settings.train_steps`` steps (no validation); returns the trainer."""
    datamodule = TrajectoryDataModule.from_trajectories(
        data,
        window=settings.window,
        batch_size=settings.batch_size,
        val_fraction=0.0,
        test_fraction=0.0,
        seed=settings.seed,
    )
    trainer = pl.Trainer(
        max_steps=settings.train_steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    module.train()
    trainer.fit(module, datamodule=datamodule)
    module.eval()
    return trainer


# ---- the loop ---------------------------------------------------------------------------------
class Learned(NamedTuple):
    """What the collect → train → plan loop leaves: the trained module and its record."""

    module: WorldModelModule
    real_steps: int
    rounds: list[dict[str, Any]]
    random_return_mean: float | None


def learn(settings: MPCSettings, env: gym.Env) -> Learned:
    """Steps 1–4 of the module docstring, up to the evaluation."""
    module = WorldModelModule(
        cell=settings.cell,
        hidden_size=settings.hidden_size,
        num_layers=settings.num_layers,
        lr=settings.lr,
        obs_dim=env.observation_space.shape[0],
        action_dim=action_dim(env.action_space),
    )
    planner = make_planner(settings, module.model, env)
    data = collect(settings.env, min(settings.initial_steps, settings.budget_steps), seed=settings.seed)
    random_returns = _episode_returns(data)
    rounds: list[dict[str, Any]] = []
    played = 0  # planner episodes so far: they seed the next one
    while True:  # the last round trains on everything and plays no episode
        t0 = time.perf_counter()
        trainer = train(module, data, settings)
        loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
        t1 = time.perf_counter()
        if len(data) >= settings.budget_steps:
            break
        returns, cut, start = [], None, len(data)
        while len(data) - start < settings.round_steps and len(data) < settings.budget_steps:
            played += 1
            seed = settings.seed * 10_000 + played
            episode = play_episode(env, planner, seed, settings.context, settings.budget_steps - len(data))
            data = data.followed_by(episode.data)
            if episode.data.terminated[-1] or episode.data.truncated[-1]:
                returns.append(episode.total)
            else:  # cut at the budget: not a whole episode's return
                cut = {"steps": len(episode.data), "return": episode.total}
        t2 = time.perf_counter()
        mean = float(np.mean(returns)) if returns else None
        rounds.append(
            {
                "round": len(rounds) + 1,
                "real_steps": len(data),
                "episode_returns": returns,
                "mean_return": mean,
                "cut_episode": cut,
                "train_loss": loss,
                "train_s": t1 - t0,
                "episodes_s": t2 - t1,
            }
        )
        shown = "        -" if mean is None else f"{mean:9.1f}"
        also = "" if cut is None else f" + 1 cut at the budget after {cut['steps']} steps"
        print(
            f"round {len(rounds)}: return {shown} ({len(returns)} whole episodes{also})  real steps "
            f"{len(data):6d}  loss {loss:.4f}  train {t1 - t0:5.1f} s  plan {t2 - t1:5.1f} s",
            flush=True,
        )
    if settings.save_model:
        trainer.save_checkpoint(settings.save_model, weights_only=True)
    return Learned(module, len(data), rounds, float(np.mean(random_returns)) if random_returns else None)


def run_mpc(settings: MPCSettings) -> dict[str, Any]:
    """Run the loop of the module docstring (or only the evaluation, with a checkpoint); returns the report."""
    refuse_existing(settings.outputs(), settings.overwrite)
    torch.set_num_threads(settings.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner every round
    pl.seed_everything(settings.seed, verbose=False)
    start = time.perf_counter()
    env = make_env(settings.env, flatten_fix_cli)  # an unknown id or unsupported spaces: a clear error before any work
    try:
        if settings.checkpoint is not None:
            module, _ = read_world_checkpoint(settings.checkpoint)
            check_sizes(
                module, env.observation_space.shape[0], action_dim(env.action_space), settings.env, settings.checkpoint
            )
            learned = Learned(module, 0, [], None)
        else:
            learned = learn(settings, env)
    finally:
        env.close()
    train_wall = time.perf_counter() - start
    evaluation = evaluate(learned.module, settings)
    return {
        "env": settings.env,
        "planner": settings.planner,
        "reward": settings.reward,
        "real_steps": learned.real_steps,
        "wall_time_s": time.perf_counter() - start,
        "train_loop_s": train_wall,
        "eval": evaluation,
        "rounds": learned.rounds,
        "random_return_mean": learned.random_return_mean,
        "settings": settings.used(learned.module),
        "machine": machine(),
    }


def evaluate(module: WorldModelModule, settings: MPCSettings) -> dict[str, Any]:
    """The planner's returns over ``settings.eval_episodes`` real episodes on fresh seeds (no data kept)."""
    seeds = [EVAL_SEED_BASE + settings.seed * 1000 + i for i in range(settings.eval_episodes)]
    returns, t0 = [], time.perf_counter()
    for i, seed in enumerate(seeds):
        record = settings.video and i == 0
        env = make_env(settings.env, render_mode="rgb_array" if record else None)
        planner = make_planner(settings, module.model, env)
        episode = play_episode(env, planner, seed, settings.context)
        env.close()
        returns.append(episode.total)
        print(f"eval episode {i + 1}/{len(seeds)}: return {episode.total:.1f}", flush=True)
        if record:
            _write_video(episode.frames, Path(settings.out).with_suffix(".gif"), env.metadata.get("render_fps", 30))
    return {
        "seeds": seeds,
        "returns": returns,
        "mean": float(np.mean(returns)) if returns else None,
        "std": float(np.std(returns)) if returns else None,
        "eval_s": time.perf_counter() - t0,
    }


def _episode_returns(data: Trajectories) -> list[float]:
    """Returns of the finished episodes of ``data``."""
    ended = data.terminated | data.truncated
    return [float(data.reward[data.episode == e].sum()) for e in np.unique(data.episode[ended])]


def _write_video(frames: list[np.ndarray], path: Path, fps: int) -> None:
    try:
        import imageio.v3 as iio
    except ImportError as error:
        raise ImportError("--video needs imageio: pip install imageio") from error
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(frames), duration=1000 / fps, loop=0)
    print(f"wrote {path}")


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Return per round against real steps, the random policy's mean and the evaluation's mean ± std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    rounds = [r for r in report["rounds"] if r["mean_return"] is not None]  # rounds of whole episodes
    if rounds:
        ax.plot([r["real_steps"] for r in rounds], [r["mean_return"] for r in rounds], "o-", label="MPC round (mean)")
    if report.get("random_return_mean") is not None:
        ax.axhline(report["random_return_mean"], color="gray", ls="--", label="random policy")
    evaluation = report["eval"]
    if evaluation["mean"] is not None:
        x = report["real_steps"]
        label = f"eval mean ± std ({len(evaluation['returns'])} episodes)"
        ax.errorbar([x], [evaluation["mean"]], [evaluation["std"]], fmt="s", color="C3", capsize=4, label=label)
    ax.set_xlabel("real env steps")
    ax.set_ylabel("episode return")
    ax.set_title(
        f"{report['env']}: {report['planner'].upper()}, ParaRNN world model, {report['reward']} reward", fontsize=10
    )
    if ax.get_legend_handles_labels()[0]:  # nothing to label without rounds or evaluation
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- command line -----------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> MPCSettings:
    """``--flag`` per :class:`MPCSettings` field."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # a misspelt option must not pass for another one
        prog="pararnn-ts plan",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    choices = {"planner": tuple(PLANNERS), "reward": ("learned", "known"), "cell": ("gru", "lstm")}
    for f in fields(MPCSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.default is False:
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            kind = {int: int, float: float}.get(type(f.default), str)
            parser.add_argument(
                flag, type=kind, default=f.default, choices=choices.get(f.name), help=f.metadata["help"]
            )
    return MPCSettings(**vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``pararnn-ts plan``: run the MPC loop, write the JSON report and the plot; returns the report."""
    settings = parse_args(argv)
    report = run_mpc(settings)
    out = Path(settings.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    plot_report(report, out.with_suffix(".png"))
    evaluation = report["eval"]
    if evaluation["mean"] is not None:
        print(
            f"{settings.env}: eval return {evaluation['mean']:.1f} ± {evaluation['std']:.1f} over "
            f"{len(evaluation['returns'])} episodes, {report['real_steps']} real steps, {report['wall_time_s']:.0f} s"
        )
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return report


if __name__ == "__main__":
    main()
