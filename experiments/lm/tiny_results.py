"""Results of the tiny language models: the four tiny configs trained on one budget, then one table.

Each config is trained by ``pararnn-ts fit`` in a subprocess, with the same ``max_steps`` and
``max_time`` for all (their data fragment fixes the tokens per step: 16 × 256), into
``<root>/<architecture>/version_N``. The table then reads each run's ``config.yaml``,
``metrics.csv`` and ``checkpoints/last.ckpt``: parameters, train steps, wall time, tokens/s (median
of the logged ``train/tokens_per_s``), the last validation bits per byte, and the bits per byte of a
unigram model (the train split's token frequencies) on the same validation windows.

    python experiments/lm/tiny_results.py                  # trains the four (~50 min on 2 cores), then the table
    python experiments/lm/tiny_results.py --collect-only   # the table from the latest runs under --root
    python experiments/lm/tiny_results.py --quick          # 3 steps each, into runs/tiny_results_quick: a smoke test

Arguments after ``--`` go to every ``pararnn-ts fit`` (``-- --trainer.accelerator=gpu``). Writes
``experiments/lm/results/tiny_results.json`` and ``.md`` (``--quick``: next to its runs) and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.cli import instantiate_class

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ARCHITECTURES = ("paragru", "paralstm", "transformer", "mamba2")
#: the quick mode's extra overrides: validate once after its few steps, log every step
QUICK = ["--trainer.val_check_interval=3", "--trainer.limit_val_batches=2", "--trainer.log_every_n_steps=1"]


def config_path(arch: str) -> Path:
    return HERE / f"tiny_{arch}.yaml"


def fit_command(arch: str, root: Path, max_steps: int, max_time: str, overrides: Sequence[str]) -> list[str]:
    """``pararnn-ts fit`` of the tiny config of ``arch``, logging to ``root/arch/version_N``."""
    return [
        sys.executable,
        "-m",
        "pararnn_ts.cli",
        "fit",
        "-c",
        str(config_path(arch)),
        f"--trainer.max_steps={max_steps}",
        f"--trainer.max_time={max_time}",
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.logger.init_args.name={arch}",
        *overrides,
    ]


def versions(root: Path, arch: str) -> list[Path]:
    """The run folders ``root/arch/version_N`` of ``arch``, oldest (smallest ``N``) first."""
    numbered = {p: p.name.removeprefix("version_") for p in (root / arch).glob("version_*")}
    return sorted((p for p, n in numbered.items() if n.isdigit()), key=lambda p: int(numbered[p]))


def train(arch: str, root: Path, max_steps: int, max_time: str, overrides: Sequence[str]) -> Path:
    """Run one fit to its end; its folder gets a ``run.json`` with the command and the wall time."""
    before = set(versions(root, arch))
    command = fit_command(arch, root, max_steps, max_time, overrides)
    print(f"\n== {arch}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    returncode = subprocess.run(command).returncode
    wall_s = time.perf_counter() - start
    new = [p for p in versions(root, arch) if p not in before]
    if returncode != 0 or len(new) != 1:
        raise SystemExit(f"tiny_results: the {arch} run failed (exit code {returncode}, new run folders {new})")
    (new[0] / "run.json").write_text(json.dumps({"command": command, "wall_s": wall_s}, indent=1) + "\n")
    return new[0]


def read_metrics(run: Path) -> dict[str, list[float]]:
    """Every logged value of ``metrics.csv`` by column, in order (empty cells left out)."""
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows if row[key]] for key in (rows[0] if rows else {})}


def validation_windows(data: Any, limit_val_batches: int | float | None) -> int:
    """How many validation windows a fit with ``limit_val_batches`` reads: Lightning's rule, a count if an int
    or a whole float above 1 (the CLI saves ``16`` as ``16.0``), else a fraction of the batches."""
    num_batches = len(data.val_dataloader())
    if isinstance(limit_val_batches, float) and limit_val_batches > 1:
        limit_val_batches = int(limit_val_batches)
    if isinstance(limit_val_batches, int):
        num_batches = min(num_batches, limit_val_batches)
    elif limit_val_batches is not None:
        num_batches = int(num_batches * limit_val_batches)
    return min(num_batches * data.batch_size, len(data.val_dataloader().sampler))


def collect(run: Path) -> dict[str, Any]:
    """One table row from a finished run folder."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    model = instantiate_class((), config["model"])
    model.configure_model()
    data = instantiate_class((), config["data"])
    data.prepare_data()
    data.setup("validate")
    num_windows = validation_windows(data, config["trainer"].get("limit_val_batches"))
    metrics = read_metrics(run)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    run_info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    val_bpb = metrics.get("val/bpb", [])
    return {
        "architecture": config["model"]["init_args"]["mixer"],
        "run": str(run),
        "params": sum(p.numel() for p in model.parameters()),
        "train_steps": checkpoint["global_step"],
        "max_steps": config["trainer"]["max_steps"],
        "max_time": config["trainer"]["max_time"],
        "tokens_per_step": data.batch_size * data.seq_len,
        "wall_s": run_info.get("wall_s"),
        "tokens_per_s": statistics.median(metrics["train/tokens_per_s"]) if "train/tokens_per_s" in metrics else None,
        "val_bpb": val_bpb[-1] if val_bpb else None,
        "val_tokens": num_windows * data.seq_len,
        "unigram_val_bpb": data.unigram_bits_per_byte("val", num_windows=num_windows),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the rows."""

    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        "| architecture | params | train steps | tokens/step | wall (min) | tokens/s | val bpb | unigram val bpb |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wall_min = None if r["wall_s"] is None else r["wall_s"] / 60
        lines.append(
            f"| {r['architecture']} | {r['params'] / 1e6:.2f}M | {r['train_steps']} | {r['tokens_per_step']} "
            f"| {number(wall_min, '.1f')} | {number(r['tokens_per_s'], ',.0f')} | {number(r['val_bpb'], '.3f')} "
            f"| {r['unigram_val_bpb']:.3f} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    p.add_argument("--max-steps", type=int, default=1200, help="the same for all: the LR schedule spans them")
    p.add_argument("--max-time", default="00:00:15:00", help="the same cap for all (DD:HH:MM:SS)")
    p.add_argument("--root", type=Path, default=None, help="run folders (default runs/tiny_results[_quick])")
    p.add_argument("--out", type=Path, default=None, help="results JSON; the Markdown table goes next to it")
    p.add_argument("--collect-only", action="store_true", help="train nothing: tabulate the latest runs")
    p.add_argument("--quick", action="store_true", help="3 steps per model: checks the pipeline, not the models")
    args = p.parse_args(argv)
    if args.max_steps < 1:
        p.error(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.quick:
        args.max_steps = 3
        overrides = QUICK + overrides
    suffix = "_quick" if args.quick else ""
    args.root = args.root or Path("runs") / f"tiny_results{suffix}"
    args.out = args.out or (args.root / "tiny_results.json" if args.quick else RESULTS / "tiny_results.json")
    return args, overrides


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args, overrides = parse_args(argv)
    runs = {}
    for arch in args.architectures:
        if args.collect_only:
            found = [p for p in versions(args.root, arch) if (p / "checkpoints" / "last.ckpt").is_file()]
            if not found:
                raise SystemExit(f"tiny_results: no finished {arch} run under {args.root / arch}; train it first")
            runs[arch] = found[-1]
        else:
            runs[arch] = train(arch, args.root, args.max_steps, args.max_time, overrides)
    rows = [collect(run) for run in runs.values()]
    if len({r["tokens_per_step"] for r in rows}) > 1:
        print("tiny_results: warning: the runs differ in tokens per step; the budgets are not equal", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "overrides": None if args.collect_only else overrides, "rows": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    markdown = table(rows)
    args.out.with_suffix(".md").write_text(markdown + "\n")
    print(f"\n{markdown}\n\nwrote {args.out} and {args.out.with_suffix('.md')}")
    return rows


if __name__ == "__main__":
    main()
