"""World-model planning benchmark: score N candidate plans with one parallel solve vs stepping the model.

One :class:`~pararnn_ts.world.model.DynamicsModel` (random weights, sizes of the Pendulum config),
one real history of ``C`` observations, ``N`` candidate action sequences of ``H`` steps. Ways to
predict all ``N × H`` next observations:

- ``imagine``: ``model.imagine`` on the history repeated ``N`` times, ONE call (one solve of
  ``C − 1 + H`` steps for ``N`` rows), for each cell ``mode`` (``auto`` = the fused kernel on CPU);
- ``encode+imagine_from_state``: the history solved once, its state repeated, then one solve of
  ``H`` steps (what :func:`~pararnn_ts.world.vector_env.rollout` and the planners run);
- ``step loop``: ``model.observe`` over the history, then ``H`` calls of ``model.imagine_step``
  on the batch of ``N`` (how a closed-loop env, or a classic RNN planner, would do it).

Every way's predictions are checked equal to the step loop's (max abs difference reported). Time
is the median of ``--repeats`` calls after ``--warmup`` calls; prints a Markdown table and writes
a JSON file per device (``results/world_planning_<device>.json``).

    python experiments/bench/world_planning_bench.py                         # CPU, and CUDA when available
    python experiments/bench/world_planning_bench.py --candidates 200 --repeats 2 --devices cpu
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from pararnn_ts.core import ParaCell
from pararnn_ts.world.model import DynamicsModel

RESULTS = Path(__file__).parent / "results"
MODES = ("auto", "parallel", "sequential")


def set_mode(model: DynamicsModel, mode: str) -> None:
    """Solver mode of every cell of ``model``."""
    for module in model.modules():
        if isinstance(module, ParaCell):
            module.mode = mode


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Tensor], device: torch.device, warmup: int, repeats: int) -> tuple[float, Tensor]:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls, and its last output."""
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def step_loop(model: DynamicsModel, obs: Tensor, actions: Tensor, plans: Tensor) -> Tensor:
    """Predicted observations ``(N, H, O)`` by ``observe`` over the history and ``imagine_step`` over the plan."""
    n = len(plans)
    state = model.initial_state(n)
    for t in range(actions.shape[1]):
        state, _ = model.observe(state, obs[:, t], actions[:, t])
    state, pred = model.observe(state, obs[:, -1], plans[:, 0])
    out = [pred.obs]
    for t in range(1, plans.shape[1]):
        state, pred = model.imagine_step(state, pred.obs, plans[:, t])
        out.append(pred.obs)
    return torch.stack(out, 1)


def bench_device(args: argparse.Namespace, device: torch.device) -> dict:
    """All ways on ``device``; rows of seconds, speed-up over the step loop and max abs difference."""
    torch.manual_seed(0)
    model = DynamicsModel(3, 1, hidden_size=args.hidden_size, num_layers=args.num_layers).to(device).eval()
    n, horizon, context = args.candidates, args.horizon, args.context
    history_obs = torch.randn(1, context, 3, device=device)
    history_actions = torch.rand(1, context - 1, 1, device=device) * 4 - 2
    plans = torch.rand(n, horizon, 1, device=device) * 4 - 2
    obs, actions = history_obs.expand(n, -1, -1), history_actions.expand(n, -1, -1)

    def from_state() -> Tensor:
        state = model.repeat_state(model.encode(history_obs[:, :-1], history_actions), n)
        return model.imagine_from_state(state, history_obs[:, -1].expand(n, -1), plans).obs

    with torch.no_grad():
        base_s, reference = timed(lambda: step_loop(model, obs, actions, plans), device, args.warmup, args.repeats)
        rows = [{"way": "step loop", "mode": "step", "time_s": base_s, "speedup": 1.0, "max_abs_diff": 0.0}]
        for mode in MODES:
            set_mode(model, mode)
            for way, fn in (
                ("imagine", lambda: model.imagine(obs, actions, plans).obs),
                ("encode+imagine_from_state", from_state),
            ):
                seconds, out = timed(fn, device, args.warmup, args.repeats)
                diff = (out - reference).abs().max().item()
                if diff > args.tolerance:
                    raise AssertionError(f"{way} ({mode}) differs from the step loop by {diff:.2e} > {args.tolerance}")
                rows.append(
                    {"way": way, "mode": mode, "time_s": seconds, "speedup": base_s / seconds, "max_abs_diff": diff}
                )
    return {
        "device": str(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "candidates": n,
        "horizon": horizon,
        "context": context,
        "hidden_size": args.hidden_size,
        "num_layers": args.num_layers,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "rows": rows,
    }


def table(result: dict) -> str:
    lines = [
        f"{result['candidates']} plans × H={result['horizon']} (context {result['context']}), hidden "
        f"{result['hidden_size']} × {result['num_layers']} layers, {result['device']}, {result['threads']} threads\n",
        "| way | cell mode | time (ms) | vs step loop | max abs diff |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['way']} | {r['mode']} | {1e3 * r['time_s']:.1f} | {r['speedup']:.2f}× | {r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", type=int, default=1000)
    p.add_argument("--horizon", type=int, default=30)
    p.add_argument("--context", type=int, default=4, help="real observations before the plans")
    p.add_argument("--hidden-size", type=int, default=64, help="as in models/world_paragru.yaml")
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (more oversubscribes a shared CPU)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed |difference| (float32)")
    default_devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    p.add_argument("--devices", nargs="+", default=default_devices, choices=["cpu", "cuda"])
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.devices:
        result = bench_device(args, torch.device(name))
        print(table(result) + "\n")
        args.out_dir.mkdir(parents=True, exist_ok=True)
        path = args.out_dir / f"world_planning_{name}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}\n")


if __name__ == "__main__":
    main()
