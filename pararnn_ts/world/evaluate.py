"""Open-loop k-step errors of dynamics models, and the ParaRNN-vs-baselines comparison: pararnn-ts world-eval.

    pararnn-ts world-eval --env Pendulum-v1 --steps 10000          # writes runs/world_eval/
    pararnn-ts world-eval --checkpoint runs/world_pendulum/version_0/checkpoints/CKPT.ckpt --models persistence pararnn
    pararnn-ts world-eval --env Pendulum-v1 --steps 10000 --out experiments/world/results --overwrite

(the last one regenerates the committed results) trains the ParaRNN dynamics model, a sequential ``nn.GRU``
model with the same heads and losses, and a PETS-style MLP ensemble on the same transitions (random
policy), or reads the ParaRNN model from a ``pararnn-ts fit -c experiments/world/...`` checkpoint
(``--checkpoint``; its env, data and k-step settings ``eval_context`` / ``eval_ks`` / ``eval_stride`` unless
flags say otherwise; ``--models`` picks the rows), scores them and the persistence
baseline with :func:`k_step_errors` on the held-out test episodes, printing a line per model, and writes
``kstep_<env>.md`` (table), ``kstep_<env>.json`` (numbers, settings, wall times; ``null`` for a ``k`` no
window reaches) and ``rollout_<env>.png`` (predicted vs real trajectories of the longest test episode) to
``--out``; files of an earlier run are replaced only with ``--overwrite``.

:func:`k_step_errors` is the metric: for windows of every held-out episode, a model sees a context
of ``C`` observations and the ``C-1`` actions between them, gets the next ``H = max(ks)`` actions
and predicts ``o_C .. o_{C+H-1}`` open loop; the error at ``k`` is the mean over windows and
dimensions of ``(ô_{C-1+k} − o_{C-1+k})² / var_d``, ``var_d`` the per-dimension variance of the
observations (1 = as bad as predicting the mean).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..outputs import machine, refuse_existing
from .collect import Episode, flatten_fix_cli, make_env
from .model import Prediction

#: ``(context_obs (B, C, O), context_actions (B, C-1, A), plan (B, H, A))`` → ``(B, H, O)`` or a Prediction
Predictor = Callable[[Tensor, Tensor, Tensor], Tensor | Prediction]
DEFAULT_KS = (1, 5, 10, 25, 50)


def evaluation_windows(episodes: Sequence[Episode], context: int, horizon: int, stride: int) -> dict[str, np.ndarray]:
    """Every ``stride``-th window of every episode with at least one step to predict after the context.

    Returns float32 ``context_obs`` ``(W, C, O)``, ``context_actions`` ``(W, C-1, A)``, ``plan``
    ``(W, H, A)``, ``target`` ``(W, H, O)`` (``o_C .. o_{C+H-1}``; zeros past the episode's end) and
    ``valid`` ``(W,)`` int: how many of the ``H`` targets lie inside the episode.
    """
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("context_obs", "context_actions", "plan", "target", "valid")}
    for e in episodes:
        steps, obs_dim, action_dim = len(e.obs), e.obs.shape[1], e.action.shape[1]
        for start in range(0, steps - context + 1, stride):
            first = start + context - 1  # the step whose action is plan[0]
            valid = min(horizon, steps - first)
            plan = np.zeros((horizon, action_dim), np.float32)
            plan[:valid] = e.action[first : first + valid]
            target = np.zeros((horizon, obs_dim), np.float32)
            target[:valid] = e.next_obs[first : first + valid]
            rows["context_obs"].append(e.obs[start : start + context])
            rows["context_actions"].append(e.action[start:first])
            rows["plan"].append(plan)
            rows["target"].append(target)
            rows["valid"].append(np.asarray(valid))
    if not rows["valid"]:
        raise ValueError(
            f"no episode has more than context - 1 = {context - 1} steps; lower context or use longer episodes"
        )
    return {k: np.stack(v).astype(np.int64 if k == "valid" else np.float32) for k, v in rows.items()}


@torch.no_grad()
def k_step_errors(
    predict_fn: Predictor,
    episodes: Sequence[Episode],
    ks: Sequence[int] = DEFAULT_KS,
    context: int = 16,
    stride: int = 5,
    obs_var: np.ndarray | Tensor | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[int, float]:
    """Normalised open-loop ``k``-step MSE of ``predict_fn`` on ``episodes`` (see the module docstring).

    Args:
        predict_fn: the model's open-loop predictor (``DynamicsModel.imagine``, a baseline's).
        episodes: held-out episodes (actions in model units).
        ks: horizons to report; windows predict ``max(ks)`` steps.
        context: observations ``C >= 1`` the model sees before predicting.
        stride: steps between windows' starts.
        obs_var: ``(O,)`` per-dimension variances to normalise by; default the variance of the
            observations of ``episodes``.
        batch_size: windows per call of ``predict_fn``.
        device, dtype: of the tensors handed to ``predict_fn``.

    Returns:
        ``{k: error}``; NaN for a ``k`` that no window reaches (episodes too short).
    """
    if context < 1 or stride < 1 or not ks or min(ks) < 1:
        raise ValueError(f"k_step_errors: context, stride and every k must be >= 1, got {context}, {stride}, {ks}")
    horizon = max(ks)
    windows = evaluation_windows(episodes, context, horizon, stride)
    if obs_var is None:
        obs_var = np.concatenate([e.obs for e in episodes]).astype(np.float64).var(axis=0)
    var = torch.as_tensor(np.asarray(obs_var), dtype=torch.float64).clamp_min(1e-12)
    sums = torch.zeros(horizon, dtype=torch.float64)
    counts = torch.zeros(horizon, dtype=torch.float64)
    for start in range(0, len(windows["valid"]), batch_size):
        batch = {k: torch.from_numpy(v[start : start + batch_size]) for k, v in windows.items()}
        inputs = (batch[k].to(device, dtype) for k in ("context_obs", "context_actions", "plan"))
        pred = predict_fn(*inputs)
        pred = (pred.obs if isinstance(pred, Prediction) else pred).detach().to("cpu", torch.float64)
        inside = torch.arange(horizon) < batch["valid"][:, None]  # (W, H)
        error = ((pred - batch["target"].double()) ** 2 / var).mean(-1)
        sums += torch.where(inside, error, 0.0).sum(0)
        counts += inside.sum(0)
    return {k: (sums[k - 1] / counts[k - 1]).item() if counts[k - 1] else math.nan for k in ks}


# ---- the comparison -------------------------------------------------------------------------
#: rows of the comparison (``--models``) and what each is
MODELS = {
    "persistence": "every prediction is the last observation",
    "pararnn": "ParaGRU / ParaLSTM dynamics model, trained here or read from --checkpoint",
    "torch_gru": "sequential nn.GRU model with the same heads and losses",
    "mlp": "PETS-style MLP ensemble",
}
#: table names of the recurrent models by ``WorldModelModule`` cell
CELL_NAMES = {"gru": "ParaGRU", "lstm": "ParaLSTM", "torch_gru": "nn.GRU"}


class Row(NamedTuple):
    """A scored model: its table name, predictor, training seconds (``None``: read, not trained) and size."""

    name: str
    predict: Predictor
    seconds: float | None
    parameters: int


def output_paths(out_dir: str | Path, env: str) -> dict[str, Path]:
    """The ``json``, ``md`` and ``png`` files :func:`compare_models` writes for ``env`` in ``out_dir``."""
    out_dir, stem = Path(out_dir), env.replace("/", "_")
    return {
        "json": out_dir / f"kstep_{stem}.json",
        "md": out_dir / f"kstep_{stem}.md",
        "png": out_dir / f"rollout_{stem}.png",
    }


def check_episode_lengths(test: Sequence[Episode], every: Sequence[Episode], context: int) -> None:
    """Refuse a ``context`` that no test episode can serve (``context`` observations and one step to predict)."""
    longest = max((len(e.obs) for e in test), default=0)
    if longest < context:
        overall = max((len(e.obs) for e in every), default=0)
        raise ValueError(
            f"--context {context} needs test episodes of at least {context} steps ({context} observations and one "
            f"to predict), but the longest test episode has {longest} steps (the longest of all episodes "
            f"{overall}); lower --context"
        )


def compare_models(
    datamodule: Any,
    out_dir: str | Path,
    models: Sequence[str] = tuple(MODELS),
    checkpoint: str | Path | None = None,
    epochs: int = 20,
    mlp_epochs: int = 50,
    hidden_size: int = 64,
    num_layers: int = 2,
    cell: str = "gru",
    lr: float = 3e-3,
    open_loop_weight: float = 10.0,
    ks: Sequence[int] = DEFAULT_KS,
    context: int = 16,
    stride: int = 5,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score ``models`` (keys of :data:`MODELS`) on ``datamodule``'s test episodes and write the table, JSON and
    plot to ``out_dir`` (:func:`output_paths`; existing files only with ``overwrite``). Models are trained on its
    training episodes (epochs chosen on its validation episodes); the ParaRNN one is read from ``checkpoint``
    when given. Prints a line as each model starts and ends. Returns what the JSON holds."""
    if not models or not set(models) <= set(MODELS):
        raise ValueError(f"--models {list(models)}: choose among {list(MODELS)}")
    models = list(dict.fromkeys(models))  # each row once
    if checkpoint is not None and "pararnn" not in models:
        raise ValueError(f"--checkpoint {checkpoint} is scored as the pararnn row; add pararnn to --models")
    if context < 1 or stride < 1 or not ks or min(ks) < 1:
        raise ValueError(f"--context, --stride and every --ks must be >= 1, got {context}, {stride}, {list(ks)}")
    env = datamodule.source_env  # None for a file that names no env
    paths = output_paths(out_dir, env or "trajectories")
    refuse_existing(paths.values(), overwrite)
    start = time.perf_counter()
    datamodule.setup("fit")
    test = datamodule.episodes("test")
    check_episode_lengths(test, [*test, *datamodule.episodes("train"), *datamodule.episodes("val")], context)
    common = {"hidden_size": hidden_size, "num_layers": num_layers, "lr": lr, "open_loop_weight": open_loop_weight}
    common |= {"eval_ks": tuple(ks), "learn_termination": datamodule.data.terminates}
    common |= {"eval_context": context, "eval_stride": stride, "cell": cell}
    obs_var = datamodule.stats["obs_std"].astype(np.float64) ** 2
    rows, errors = [], {}
    for i, model in enumerate(models, 1):
        print(f"[{i}/{len(models)}] {model}: {MODELS[model]} ...", flush=True)
        row = model_row(model, datamodule, checkpoint, epochs, mlp_epochs, seed, common)
        errors[row.name] = k_step_errors(row.predict, test, ks, context, stride, obs_var)
        took = "read from --checkpoint" if row.seconds is None else f"{row.seconds:.0f} s"
        scores = "  ".join(f"k={k} {_number(v, '.4f')}" for k, v in errors[row.name].items())
        print(f"[{i}/{len(models)}] {row.name}: {took}; k-step errors {scores}", flush=True)
        rows.append(row)

    settings = {"models": list(models), "checkpoint": None if checkpoint is None else str(checkpoint)}
    settings |= {"cell": cell, "hidden_size": hidden_size, "num_layers": num_layers, "epochs": epochs, "lr": lr}
    settings |= {"open_loop_weight": open_loop_weight, "mlp_epochs": mlp_epochs, "window": datamodule.window}
    settings |= {"context": context, "stride": stride, "seed": seed}
    results = {
        "env_id": env,
        "num_steps": len(datamodule.data),
        "episodes": {split: len(ids) for split, ids in datamodule.split_ids.items()},
        "settings": settings,
        "metric": "open-loop k-step MSE / per-dimension variance of the training observations, test episodes",
        "errors": {name: {str(k): v if math.isfinite(v) else None for k, v in e.items()} for name, e in errors.items()},
        "train_seconds": {row.name: row.seconds for row in rows},
        "parameters": {row.name: row.parameters for row in rows},
        "wall_seconds": time.perf_counter() - start,
        "machine": machine("cpu"),  # its models run on the CPU
    }
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps(results, indent=2, allow_nan=False))
    paths["md"].write_text(markdown_table(results, ks))
    longest = max(test, key=lambda e: len(e.obs))
    predictors = {row.name: row.predict for row in rows}
    plot_rollout(paths["png"], longest, predictors, context, max(ks), env or "trajectories")
    return results


def model_row(
    model: str,
    datamodule: Any,
    checkpoint: str | Path | None,
    epochs: int,
    mlp_epochs: int,
    seed: int,
    module_kwargs: dict[str, Any],
) -> Row:
    """One row of :func:`compare_models`: ``model`` (a key of :data:`MODELS`) read or trained on ``datamodule``."""
    from .baselines import MLPEnsemble, fit_mlp_ensemble, persistence
    from .checkpoints import check_sizes, env_for_checkpoint, read_world_checkpoint

    if model == "persistence":
        return Row("persistence", persistence, 0.0, 0)
    if model == "mlp":
        torch.manual_seed(seed)
        ensemble = MLPEnsemble(datamodule.obs_dim, datamodule.action_dim)
        ensemble.set_normalizer(datamodule.stats)
        start = time.perf_counter()
        train, val = datamodule.episodes("train"), datamodule.episodes("val")
        fit_mlp_ensemble(ensemble, train, val, epochs=mlp_epochs, seed=seed)
        size = sum(p.numel() for p in ensemble.parameters())
        return Row("MLP ensemble", ensemble.rollout, time.perf_counter() - start, size)
    if model == "pararnn" and checkpoint is not None:
        module, trained_on = read_world_checkpoint(checkpoint)
        env = env_for_checkpoint(datamodule.source_env, trained_on, checkpoint)
        check_sizes(module, datamodule.obs_dim, datamodule.action_dim, env, checkpoint)
        seconds = None
    else:
        kwargs = module_kwargs | ({"cell": "torch_gru"} if model == "torch_gru" else {})
        module, seconds = train_world_model(datamodule, epochs, seed, **kwargs)
    return Row(cell_name(module.hparams.cell), module, seconds, sum(p.numel() for p in module.parameters()))


def cell_name(cell: Any) -> str:
    """A table's name for a world model's recorded ``cell``: a built-in's, or a user cell's class path."""
    if isinstance(cell, str):
        return CELL_NAMES[cell]
    return cell["class_path"] if isinstance(cell, dict) and "class_path" in cell else repr(cell)


def train_world_model(datamodule: Any, max_epochs: int, seed: int = 0, **module_kwargs: Any) -> tuple[Any, float]:
    """Fit a :class:`~pararnn_ts.world.module.WorldModelModule` on ``datamodule``; keep the epoch with the
    lowest validation loss. Returns the module (eval mode) and the fit's wall time in seconds."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from .module import WorldModelModule  # here, not at the top: the module imports this file's metric

    pl.seed_everything(seed, verbose=False)
    module = WorldModelModule(**module_kwargs)
    with tempfile.TemporaryDirectory() as folder:
        best = ModelCheckpoint(dirpath=folder, monitor="val/loss", mode="min", save_top_k=1)
        trainer = pl.Trainer(
            accelerator="cpu",
            max_epochs=max_epochs,
            callbacks=[best],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            gradient_clip_val=1.0,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        seconds = time.perf_counter() - start
        module = WorldModelModule.load_from_checkpoint(best.best_model_path, map_location="cpu")
    return module.eval(), seconds


def _number(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``; ``-`` for a missing (``None`` or NaN) one."""
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def markdown_table(results: dict[str, Any], ks: Sequence[int]) -> str:
    """The k-step errors of ``results`` (from :func:`compare_models`) as a Markdown table; ``-``: no value."""
    lines = [
        f"# {results['env_id']}: open-loop k-step normalised MSE (test episodes)",
        "",
        f"{results['num_steps']} random-policy steps; episodes {results['episodes']}; context "
        f"{results['settings']['context']} observations. Error = MSE / per-dimension variance (lower is better).",
        "",
        "| model | " + " | ".join(f"k={k}" for k in ks) + " | parameters | train s |",
        "|---|" + "---:|" * (len(ks) + 2),
    ]
    for name, errors in results["errors"].items():
        cells = " | ".join(_number(errors[str(k)], ".4f") for k in ks)
        size, seconds = results["parameters"][name], results["train_seconds"][name]
        lines.append(f"| {name} | {cells} | {size} | {_number(seconds, '.0f')} |")
    return "\n".join(lines) + "\n"


def plot_rollout(
    path: Path, episode: Episode, predictors: dict[str, Predictor], context: int, horizon: int, title: str
) -> None:
    """Real vs predicted observations of ``episode`` after its first ``context`` steps, one panel per dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    horizon = min(horizon, len(episode.obs) - context + 1)
    window = evaluation_windows([episode], context, horizon, stride=len(episode.obs))
    inputs = [torch.from_numpy(window[k][:1]) for k in ("context_obs", "context_actions", "plan")]
    real = np.concatenate([episode.obs[:context], episode.next_obs[context - 1 : context - 1 + horizon]])
    dims = real.shape[1]
    fig, axes = plt.subplots(dims, 1, figsize=(8, 2.2 * dims), sharex=True, squeeze=False)
    steps = np.arange(len(real))
    for d, ax in enumerate(axes[:, 0]):
        ax.plot(steps, real[:, d], color="black", lw=2, label="real")
        for name, fn in predictors.items():
            with torch.no_grad():
                pred = fn(*inputs)
            pred = (pred.obs if isinstance(pred, Prediction) else pred)[0].numpy()
            ax.plot(steps[context:], pred[:, d], lw=1.2, label=name)
        ax.axvline(context - 1, color="grey", ls="--", lw=0.8)
        ax.set_ylabel(f"obs[{d}]")
    axes[0, 0].set_title(f"{title}: open-loop predictions after {context} observed steps")
    axes[0, 0].legend(fontsize=7, ncol=len(predictors) + 1)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``pararnn-ts world-eval``: score the models, write the table, JSON and plot, print the table."""
    from .checkpoints import checkpoint_data, checkpoint_env, checkpoint_evaluation, env_for_checkpoint, load_checkpoint
    from .datamodule import TrajectoryDataModule

    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # a misspelt option must not pass for another one
        prog="pararnn-ts world-eval",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--env", default=None, help="Gymnasium env id; None: the --checkpoint's env, else Pendulum-v1")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="WorldModelModule .ckpt (pararnn-ts fit -c experiments/world/...) scored as the pararnn row instead of "
        "training one, on the data and episode split it was trained with (unless --steps/--seed/--data say otherwise); "
        "a plan --save-model one, trained on all of its data, needs fresh episodes: --steps and --seed, or --data",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=tuple(MODELS),
        default=list(MODELS),
        metavar="MODEL",
        help="rows to score: " + "; ".join(f"{k} ({v})" for k, v in MODELS.items()),
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="random-policy transitions to collect; None: the --checkpoint's, else 10000",
    )
    parser.add_argument(
        "--data", default=None, help="trajectory .npz to read (or to write the collection to); None: the --checkpoint's"
    )
    parser.add_argument("--out", default="runs/world_eval", help="folder for kstep_<env>.json/.md, rollout_<env>.png")
    parser.add_argument("--overwrite", action="store_true", help="replace those files when --out already has them")
    parser.add_argument("--cell", choices=("gru", "lstm"), default="gru", help="cell of the trained pararnn row")
    parser.add_argument("--hidden-size", type=int, default=64, help="width of the recurrent models")
    parser.add_argument("--num-layers", type=int, default=2, help="blocks of the recurrent models")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the recurrent models")
    parser.add_argument("--mlp-epochs", type=int, default=50, help="epochs of the MLP ensemble")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate of the recurrent models")
    parser.add_argument("--open-loop-weight", type=float, default=10.0, help="weight of the open-loop loss")
    parser.add_argument("--window", type=int, default=80, help="training window (>= context + max k to train k steps)")
    parser.add_argument("--train-stride", type=int, default=4, help="steps between training windows")
    parser.add_argument("--batch-size", type=int, default=32, help="training windows per batch")
    parser.add_argument(
        "--context",
        type=int,
        default=None,
        help="observations a model sees before predicting; None: the --checkpoint's eval_context, else 16",
    )
    parser.add_argument(
        "--stride",
        type=int,
        default=None,
        help="steps between evaluation windows; None: the --checkpoint's eval_stride, else 5",
    )
    parser.add_argument(
        "--ks",
        type=int,
        nargs="+",
        default=None,
        help=f"open-loop horizons to report; None: the --checkpoint's eval_ks, else {' '.join(map(str, DEFAULT_KS))}",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seeds collection, the episode split and training; None: the --checkpoint's, else 0",
    )
    args = parser.parse_args(argv)
    env = args.env
    given = {"path": args.data, "num_steps": args.steps, "seed": args.seed}
    data = {"path": None, "num_steps": 10_000, "seed": 0}
    given_evaluation = {"context": args.context, "ks": args.ks, "stride": args.stride}
    evaluation = {"context": 16, "ks": list(DEFAULT_KS), "stride": 5}
    if args.checkpoint is not None:
        checkpoint = load_checkpoint(args.checkpoint)
        env = env_for_checkpoint(env, checkpoint_env(checkpoint), args.checkpoint)
        data = checkpoint_data(checkpoint, given, args.checkpoint) or data
        evaluation |= checkpoint_evaluation(checkpoint, given_evaluation, args.checkpoint)
    data |= {name: value for name, value in given.items() if value is not None}
    if args.steps is not None:  # fresh episodes: collected from (or a --data file checked against) the env
        data.pop("env_id", None)
    evaluation |= {name: value for name, value in given_evaluation.items() if value is not None}
    env = env or "Pendulum-v1"
    make_env(env, flatten_fix_cli).close()  # an unknown id or unsupported spaces: a clear error before any work
    datamodule = TrajectoryDataModule(
        **{"env_id": env, **data},
        window=args.window,
        stride=args.train_stride,
        batch_size=args.batch_size,
    )
    datamodule.options = {"path": "--data", "num_steps": "--steps", "seed": "--seed"}  # world-eval's, in its errors
    results = compare_models(
        datamodule,
        args.out,
        models=args.models,
        checkpoint=args.checkpoint,
        epochs=args.epochs,
        mlp_epochs=args.mlp_epochs,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        cell=args.cell,
        lr=args.lr,
        open_loop_weight=args.open_loop_weight,
        **evaluation,
        seed=data["seed"],
        overwrite=args.overwrite,
    )
    print(markdown_table(results, evaluation["ks"]) + f"\nwall time {results['wall_seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
