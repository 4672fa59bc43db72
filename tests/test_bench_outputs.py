"""The benchmark scripts write under runs/bench by default and never replace a results file without --overwrite,
refusing before any work (experiments/bench/results_file.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "lm"))
sys.path.insert(0, str(ROOT / "experiments" / "synthetic"))
sys.path.insert(0, str(ROOT / "experiments" / "bench"))
import kernel_bench  # noqa: E402
import lm_throughput  # noqa: E402
import parity_results  # noqa: E402
import results_file  # noqa: E402
import solver_bench  # noqa: E402
import tiny_results  # noqa: E402
import triton_compile_check  # noqa: E402
import world_planning_bench  # noqa: E402


def fail(*args, **kwargs):
    raise AssertionError("the run did work before refusing to replace its results")


def test_results_path_defaults_under_runs_bench_and_refuses_existing_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert results_file.results_path(None, "x.json", overwrite=False) == Path("runs/bench/x.json")
    assert results_file.results_path(tmp_path / "y.json", "x.json", overwrite=False) == tmp_path / "y.json"
    (tmp_path / "y.md").write_text("table")
    with pytest.raises(FileExistsError, match=r"y\.md already exists: pass --overwrite to replace it, or --out"):
        results_file.results_path(tmp_path / "y.json", "x.json", overwrite=False, also=(".md",))
    assert (
        results_file.results_path(tmp_path / "y.json", "x.json", overwrite=True, also=(".md",)) == tmp_path / "y.json"
    )


def test_kernel_bench_writes_under_runs_bench_refuses_to_replace_and_overwrites_when_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["kernel_bench.py", "--cells", "gru", "--modes", "sequential", "--T", "8", "--cases", "gru/sequential"]
    monkeypatch.setattr(kernel_bench, "bandwidth", lambda device, mib: 1e9)

    def run(time_s: float, *extra: str) -> None:
        row = {"time_s": time_s, "floor_bytes": 1000}
        monkeypatch.setattr(
            kernel_bench, "run_case", lambda args, name, T, passes: dict(case=name, T=T, passes=passes, **row)
        )
        monkeypatch.setattr(sys, "argv", [*argv, *extra])
        kernel_bench.main()

    out = tmp_path / "runs" / "bench" / "kernels_cpu.json"
    run(1.0)
    assert [r["time_s"] for r in json.loads(out.read_text())["rows"]] == [1.0, 1.0]
    before = out.read_text()
    monkeypatch.setattr(kernel_bench, "run_case", fail)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit):
        kernel_bench.main()
    assert out.read_text() == before
    run(2.0, "--overwrite")
    assert [r["time_s"] for r in json.loads(out.read_text())["rows"]] == [2.0, 2.0]


def test_lm_throughput_default_path_refusal_and_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["--archs", "paragru", "--T", "16", "--dim", "8", "--layers", "1"]
    assert lm_throughput.parse_args(argv).out == Path("runs/bench/lm_throughput_cpu.json")
    row = {"arch": "paragru", "T": 16, "batch": 1, "time_s": 0.5, "tokens_per_s": 32.0, "peak_mib": 1.0}
    monkeypatch.setattr(lm_throughput, "run_case", lambda args, arch, dim, T: row)
    assert lm_throughput.main(argv) == [row]
    out = tmp_path / "runs" / "bench" / "lm_throughput_cpu.json"
    assert json.loads(out.read_text())["rows"] == [row]
    monkeypatch.setattr(lm_throughput, "run_case", fail)
    with pytest.raises(SystemExit):
        lm_throughput.main(argv)
    assert f"{Path('runs/bench/lm_throughput_cpu.json')} already exists: pass --overwrite" in capsys.readouterr().err
    row = {**row, "time_s": 0.25}
    monkeypatch.setattr(lm_throughput, "run_case", lambda args, arch, dim, T: row)
    lm_throughput.main([*argv, "--overwrite"])
    assert json.loads(out.read_text())["rows"] == [row]


def test_tiny_results_default_path_refusal_and_overwrite_without_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert tiny_results.parse_args([])[0].out == Path("runs/bench/tiny_results.json")
    row = {"architecture": "paragru", "params": 10**6, "train_steps": 10, "tokens_per_step": 100, "wall_s": 4.0}
    row |= {"tokens_per_s": 500.0, "val_bpb": 2.0, "unigram_val_bpb": 4.5}
    monkeypatch.setattr(tiny_results, "train", lambda arch, *args: tmp_path / arch)
    monkeypatch.setattr(tiny_results, "collect", lambda run: row)
    tiny_results.main(["--architectures", "paragru"])
    out = tmp_path / "runs" / "bench" / "tiny_results.json"
    assert json.loads(out.read_text())["rows"] == [row] and "| 500 | 250 |" in out.with_suffix(".md").read_text()
    out.unlink()  # the Markdown table alone is enough to refuse
    monkeypatch.setattr(tiny_results, "train", fail)
    monkeypatch.setattr(tiny_results, "collect", fail)
    with pytest.raises(SystemExit):
        tiny_results.main(["--architectures", "paragru"])
    assert (
        "tiny_results.md already exists: pass --overwrite to replace it, or --out elsewhere" in capsys.readouterr().err
    )
    assert not out.exists()
    monkeypatch.setattr(tiny_results, "train", lambda arch, *args: tmp_path / arch)
    monkeypatch.setattr(tiny_results, "collect", lambda run: {**row, "val_bpb": 1.5})
    tiny_results.main(["--architectures", "paragru", "--overwrite"])
    assert json.loads(out.read_text())["rows"][0]["val_bpb"] == 1.5


def test_tiny_results_table_names_the_median_step_rate_and_adds_the_overall_rate():
    committed = json.loads((ROOT / "experiments" / "lm" / "results" / "tiny_results.json").read_text())["rows"]
    markdown = tiny_results.table(committed)
    assert "| median step tokens/s | overall tokens/s |" in markdown
    assert "| paragru | 2.05M | 533 | 4096 | 15.6 | 10,283 | 2,325 |" in markdown  # 533 × 4096 / 938.9 s
    assert "| 4096 | - | 10,283 | - |" in tiny_results.table([{**committed[0], "wall_s": None}])


@pytest.mark.parametrize(
    ("module", "argv", "existing", "work"),
    [
        (solver_bench, [], "runs/bench/solver_cpu.json", ["run_in_subprocess"]),
        (
            world_planning_bench,
            ["--devices", "cpu"],
            "runs/bench/world_planning/world_planning_cpu.json",
            ["bench_device"],
        ),
        (triton_compile_check, [], "runs/bench/triton_compile_sm90.json", ["launches", "compile_launch"]),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_the_other_scripts_refuse_an_existing_default_file_before_any_work(
    module, argv, existing, work, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / existing).parent.mkdir(parents=True)
    (tmp_path / existing).write_text("committed")
    for name in work:
        monkeypatch.setattr(module, name, fail)
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *argv])
    with pytest.raises(SystemExit) as refused:
        module.main()
    assert refused.value.code == 2 and f"{Path(existing)} already exists: pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / existing).read_text() == "committed"


def test_the_triton_scripts_refuse_an_existing_file_before_any_work(tmp_path, monkeypatch, capsys):
    import triton  # noqa: F401  (a plain import: CI installs triton, so a missing one must fail, not skip)
    import triton_sequential_bound
    import triton_tuning

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "bench").mkdir(parents=True)
    (tmp_path / "runs" / "bench" / "triton_sequential_bound_cuda.json").write_text("committed")
    (tmp_path / "tune.json").write_text("committed")
    monkeypatch.setattr(triton_sequential_bound, "copy_bandwidth", fail)
    monkeypatch.setattr(triton_tuning, "problem", fail)
    for module, argv in ((triton_sequential_bound, []), (triton_tuning, ["--out", str(tmp_path)])):
        monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *argv])
        with pytest.raises(SystemExit):
            module.main()
        assert "already exists: pass --overwrite to replace it, or --out elsewhere" in capsys.readouterr().err
    assert (tmp_path / "tune.json").read_text() == "committed"


def test_parity_results_trains_reads_back_its_runs_and_refuses_to_rerun_over_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert parity_results.parse_args([])[0].out == Path("runs/bench/parity_results.json")
    (row,) = parity_results.main(["--quick", "--models", "paragru", "--seeds", "3"])
    run = Path(row["run"])
    assert run == Path("runs/parity_results_quick/parity_paragru_seed3/version_0")
    config = (run / "config.yaml").read_text()
    assert "seed_everything: 3" in config and "seed: 3" in config and "max_steps: 3" in config
    logged = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    column = logged[0].index("test_acc")
    assert row["test_acc"] == float(next(line[column] for line in logged[1:] if line[column]))
    out = Path("runs/parity_results_quick/parity_results.json")
    assert json.loads(out.read_text())["rows"] == [row]
    assert f"| ParaGRU (`parity_paragru.yaml`) | {100 * row['test_acc']:.1f}% |" in out.with_suffix(".md").read_text()
    monkeypatch.setattr(parity_results, "fit", fail)
    with pytest.raises(SystemExit):
        parity_results.main(["--quick", "--models", "paragru", "--seeds", "3"])
    assert "parity_results.json, " in capsys.readouterr().err
