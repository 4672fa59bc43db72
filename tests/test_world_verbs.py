"""The ``world-eval`` and ``plan`` verbs: outputs never overwritten unasked, checks before any work, checkpoints
of ``pararnn-ts fit -c experiments/world/pendulum.yaml`` read with their env, strict JSON, progress lines."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch

from pararnn_ts.cli import can_test
from pararnn_ts.cli import main as cli_main
from pararnn_ts.world import evaluate, mpc
from pararnn_ts.world.baselines import persistence
from pararnn_ts.world.collect import collect, make_env
from pararnn_ts.world.datamodule import TrajectoryDataModule
from pararnn_ts.world.module import WorldModelModule

CONFIG = Path(__file__).parents[1] / "experiments" / "world" / "pendulum.yaml"
#: world-eval settings small enough for a test
TINY = ["--epochs", "1", "--mlp-epochs", "1", "--hidden-size", "4", "--num-layers", "1", "--window", "12"]


@pytest.fixture(scope="module")
def fit_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint as ``pararnn-ts fit -c experiments/world/pendulum.yaml`` writes it (one tiny epoch)."""
    runs = tmp_path_factory.mktemp("runs")
    with mock.patch.object(sys, "argv", ["pararnn-ts"]):  # the CLI reads its args only, not pytest's
        cli_main(
            [
                "fit",
                "-c",
                str(CONFIG),
                "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=2",
                "--trainer.limit_val_batches=1",
                "--trainer.limit_test_batches=0",
                "--trainer.enable_progress_bar=false",
                f"--trainer.logger.init_args.save_dir={runs}",
                "--data.init_args.num_steps=1000",
                "--model.init_args.hidden_size=4",
                "--model.init_args.num_layers=1",
            ]
        )
    (checkpoint,) = runs.glob("world_pendulum/version_0/checkpoints/epoch=*.ckpt")  # beside last.ckpt
    return checkpoint


def test_without_test_episodes_fit_runs_no_test_and_test_is_refused(fit_checkpoint, tmp_path):
    """``test_fraction=0``: a fit trained whole and then failed on the test after it (status 2)."""
    assert not can_test(WorldModelModule(obs_dim=3, action_dim=1), TrajectoryDataModule("Pendulum-v1", test_fraction=0))
    assert can_test(WorldModelModule(obs_dim=3, action_dim=1), TrajectoryDataModule("Pendulum-v1", test_fraction=0.1))
    score = [
        "test",
        "-c",
        str(CONFIG),
        f"--ckpt_path={fit_checkpoint}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    with mock.patch.object(sys, "argv", ["pararnn-ts"]):
        with pytest.raises(ValueError, match="no test split: test_fraction=0 holds out no episodes"):
            cli_main([*score, "--data.init_args.num_steps=1000", "--data.init_args.test_fraction=0"])


@pytest.mark.parametrize("verb", ["validate", "test"])
def test_scoring_on_episodes_picked_otherwise_warns_naming_the_arguments(fit_checkpoint, tmp_path, verb):
    """Another seed or size draws other held-out episodes, which may then include ones the model trained on; other
    loader settings (batch_size) change no episode and are not warned about."""
    score = [
        verb,
        "-c",
        str(CONFIG),
        f"--ckpt_path={fit_checkpoint}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    score += ["--data.init_args.num_steps=1000", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]
    with mock.patch.object(sys, "argv", ["pararnn-ts"]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cli_main([*score, "--data.init_args.batch_size=4"])
        assert not [w for w in caught if "other arguments" in str(w.message)]
        want = rf"trained on data picked and split with other arguments; this {verb} scores.*seed=3 \(checkpoint: 0\)"
        with pytest.warns(UserWarning, match=want):
            cli_main([*score, "--data.init_args.seed=3"])


@pytest.fixture
def no_work(monkeypatch):
    """Make collecting data or training a model fail loudly: what is checked must be checked before them."""

    def fail(*args, **kwargs):
        raise AssertionError("collection or training started")

    monkeypatch.setattr(TrajectoryDataModule, "setup", fail)
    monkeypatch.setattr(mpc, "collect", fail)
    monkeypatch.setattr(evaluate, "train_world_model", fail)


def foreign_checkpoint(path: Path, hparams: dict) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, path)
    return path


# ---- outputs ----------------------------------------------------------------------------------------
def test_world_eval_refuses_existing_outputs_before_collecting(tmp_path, no_work):
    (tmp_path / "kstep_Pendulum-v1.md").write_text("earlier run")
    with pytest.raises(
        FileExistsError, match=r"kstep_Pendulum-v1\.md already exists: pass --overwrite .* or --out elsewhere"
    ):
        evaluate.main(["--out", str(tmp_path)])
    with pytest.raises(AssertionError, match="collection or training started"):  # --overwrite lets it run
        evaluate.main(["--out", str(tmp_path), "--overwrite"])
    assert (tmp_path / "kstep_Pendulum-v1.md").read_text() == "earlier run"


def test_plan_refuses_existing_outputs_before_collecting(tmp_path, no_work):
    out = tmp_path / "mpc.json"
    out.with_suffix(".png").write_bytes(b"earlier plot")
    with pytest.raises(FileExistsError, match=r"mpc\.png already exists: pass --overwrite .* or --out elsewhere"):
        mpc.main(["--out", str(out)])
    out.with_suffix(".png").unlink()
    (tmp_path / "model.ckpt").write_bytes(b"earlier model")
    with pytest.raises(FileExistsError, match=r"model\.ckpt already exists: .* or --save-model elsewhere"):
        mpc.main(["--out", str(out), "--save-model", str(tmp_path / "model.ckpt")])
    with pytest.raises(AssertionError, match="collection or training started"):
        mpc.main(["--out", str(out), "--save-model", str(tmp_path / "model.ckpt"), "--overwrite"])


def test_default_outputs_are_not_the_committed_results(capsys):
    assert mpc.parse_args([]).out == "runs/plan/Pendulum-v1_mpc.json"
    assert mpc.parse_args(["--env", "CartPole-v1"]).out == "runs/plan/CartPole-v1_mpc.json"
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: pararnn-ts world-eval")
    for part in ("--out OUT", "(default: runs/world_eval)", "--stride STRIDE", "eval_stride, else 5", "--overwrite"):
        assert part in text
    with pytest.raises(SystemExit):
        mpc.main(["--help"])
    assert "runs/plan/<env>_mpc.json" in capsys.readouterr().out


# ---- world-eval runs --------------------------------------------------------------------------------
def test_world_eval_checks_the_context_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "train_world_model", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(ValueError, match=r"--context 150 .* the longest test episode has \d+ steps"):
        evaluate.main(["--env", "CartPole-v1", "--steps", "400", "--context", "150", "--out", str(tmp_path)])


def test_world_eval_plots_a_long_enough_episode_prints_progress_and_writes_strict_json(tmp_path, capsys):
    """CartPole's first test episode is shorter than the context: the plot takes the longest one."""
    data = TrajectoryDataModule("CartPole-v1", None, 400, 0, window=12, stride=4, batch_size=32)
    data.setup("fit")
    test = data.episodes("test")
    context = len(test[0].obs) + 1
    assert context <= max(len(e.obs) for e in test)
    argv = ["--env", "CartPole-v1", "--steps", "400", "--context", str(context), "--stride", "3", "--ks", "1", "500"]
    results = evaluate.main([*argv, *TINY, "--models", "persistence", "--out", str(tmp_path)])

    out = capsys.readouterr().out
    assert "[1/1] persistence: every prediction is the last observation ..." in out
    assert "[1/1] persistence: 0 s; k-step errors k=1 " in out and "k=500 -" in out
    assert "| persistence |" in out  # the table is printed
    assert (tmp_path / "rollout_CartPole-v1.png").is_file()
    stored = json.loads((tmp_path / "kstep_CartPole-v1.json").read_text(), parse_constant=pytest.fail)
    assert stored["errors"]["persistence"]["500"] is None and stored["settings"]["stride"] == 3
    models = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    assert stored["machine"]["cpu"] == models[0].split(":", 1)[1].strip()
    assert stored["machine"]["torch_threads"] == torch.get_num_threads() and stored["machine"]["torch"]
    var = data.stats["obs_std"].astype(np.float64) ** 2
    expected = evaluate.k_step_errors(persistence, test, (1,), context, stride=3, obs_var=var)
    assert results["errors"]["persistence"]["1"] == pytest.approx(expected[1])
    assert "| persistence | " in (tmp_path / "kstep_CartPole-v1.md").read_text()
    assert " | - | 0 | 0 |" in (tmp_path / "kstep_CartPole-v1.md").read_text()


def test_world_eval_trains_every_model_with_a_line_as_each_starts_and_ends(tmp_path, capsys):
    argv = ["--steps", "600", "--context", "4", "--ks", "1", "5", "--out", str(tmp_path), *TINY]
    results = evaluate.main(argv)
    lines = capsys.readouterr().out.splitlines()
    names = ("persistence", "ParaGRU", "nn.GRU", "MLP ensemble")
    for i, (model, name) in enumerate(zip(evaluate.MODELS, names, strict=True), 1):
        assert any(line.startswith(f"[{i}/4] {model}: ") and line.endswith("...") for line in lines)
        assert any(line.startswith(f"[{i}/4] {name}: ") and "k-step errors k=1 " in line for line in lines)
    assert list(results["errors"]) == ["persistence", "ParaGRU", "nn.GRU", "MLP ensemble"]


# ---- checkpoints ------------------------------------------------------------------------------------
def test_fit_checkpoints_carry_their_env(fit_checkpoint):
    from pararnn_ts.world.checkpoints import read_world_checkpoint

    module, env_id = read_world_checkpoint(fit_checkpoint)
    assert env_id == "Pendulum-v1" and module.hparams.hidden_size == 4 and not module.training


def test_a_checkpoint_of_a_cell_that_cannot_be_imported_here_is_refused_naming_the_fix(fit_checkpoint, tmp_path):
    from pararnn_ts.world.checkpoints import read_world_checkpoint

    checkpoint = torch.load(fit_checkpoint, weights_only=False)
    checkpoint["hyper_parameters"]["cell"] = {"class_path": "my_cells.TanhRNN", "init_args": {}}
    moved = tmp_path / "mycell.ckpt"
    torch.save(checkpoint, moved)
    with pytest.raises(ImportError, match=rf"--checkpoint {moved} was trained with the cell 'my_cells.TanhRNN', wh"):
        read_world_checkpoint(moved)


def test_world_eval_scores_a_checkpoint_on_its_env(fit_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "train_world_model", lambda *a, **k: pytest.fail("training started"))
    argv = ["--checkpoint", str(fit_checkpoint), "--models", "persistence", "pararnn"]
    argv += ["--context", "4", "--ks", "1", "5"]
    results = evaluate.main([*argv, "--out", str(tmp_path)])
    assert results["env_id"] == "Pendulum-v1" and list(results["errors"]) == ["persistence", "ParaGRU"]
    trained = TrajectoryDataModule("Pendulum-v1", None, 1000, 0)  # the fixture's data: its split, not world-eval's
    trained.setup("fit")
    assert results["num_steps"] == 1000
    assert results["episodes"] == {split: len(ids) for split, ids in trained.split_ids.items()}
    with pytest.warns(UserWarning, match=r"other data than it was trained on: num_steps=600 \(trained: 1000\)"):
        other = evaluate.main([*argv, "--steps", "600", "--out", str(tmp_path / "other")])
    assert other["num_steps"] == 600
    assert results["train_seconds"]["ParaGRU"] is None and results["settings"]["checkpoint"] == str(fit_checkpoint)
    assert " | - |" in (tmp_path / "kstep_Pendulum-v1.md").read_text()
    with pytest.raises(ValueError, match="scored as the pararnn row; add pararnn to --models"):
        evaluate.main(["--checkpoint", str(fit_checkpoint), "--models", "persistence", "--out", str(tmp_path / "b")])


def test_a_checkpoint_fit_on_a_file_read_as_it_is_is_scored_on_that_file_and_its_env(
    fit_checkpoint, tmp_path, monkeypatch
):
    """``env_id: null`` with a ``path``: the env is the file's, and its unused num_steps/num_envs are not checked."""
    monkeypatch.setattr(evaluate, "train_world_model", lambda *a, **k: pytest.fail("training started"))
    file = collect("Pendulum-v1", 800, seed=3, num_envs=4).save(tmp_path / "mine.npz")
    checkpoint = torch.load(fit_checkpoint, weights_only=False)
    checkpoint["datamodule_hyper_parameters"] |= {"env_id": None, "path": str(file), "num_steps": 10_000}
    path = tmp_path / "from_file.ckpt"
    torch.save(checkpoint, path)
    argv = ["--checkpoint", str(path), "--models", "persistence", "pararnn", "--context", "4", "--ks", "1", "5"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing differs from how it was trained
        results = evaluate.main([*argv, "--out", str(tmp_path / "eval")])
    trained = TrajectoryDataModule(None, str(file), seed=0)  # the fit's data and split
    trained.setup("fit")
    assert results["env_id"] == "Pendulum-v1" and results["num_steps"] == 800
    assert results["episodes"] == {split: len(ids) for split, ids in trained.split_ids.items()}
    assert (tmp_path / "eval" / "kstep_Pendulum-v1.md").is_file()
    assert mpc.parse_args(["--checkpoint", str(path), "--eval-episodes", "0"]).env == "Pendulum-v1"


def test_world_eval_scores_a_checkpoint_with_its_k_step_settings_unless_a_flag_says_otherwise(
    fit_checkpoint, tmp_path, monkeypatch, capsys
):
    """The checkpoint's eval_context / eval_ks / eval_stride by default; a flag wins, said in one printed line."""
    monkeypatch.setattr(evaluate, "train_world_model", lambda *a, **k: pytest.fail("training started"))
    checkpoint = torch.load(fit_checkpoint, weights_only=False)
    checkpoint["hyper_parameters"] |= {"eval_context": 4, "eval_ks": [1, 5], "eval_stride": 3}
    path = tmp_path / "short.ckpt"
    torch.save(checkpoint, path)
    argv = ["--checkpoint", str(path), "--models", "persistence", "pararnn"]
    results = evaluate.main([*argv, "--out", str(tmp_path / "own")])
    assert (results["settings"]["context"], results["settings"]["stride"]) == (4, 3)
    assert list(results["errors"]["ParaGRU"]) == ["1", "5"] and "as given" not in capsys.readouterr().out
    results = evaluate.main([*argv, "--context", "6", "--stride", "3", "--out", str(tmp_path / "flags")])
    assert (results["settings"]["context"], results["settings"]["stride"]) == (6, 3)
    assert list(results["errors"]["ParaGRU"]) == ["1", "5"]
    said = [line for line in capsys.readouterr().out.splitlines() if "as given" in line]
    assert said == [
        f"--checkpoint {path}: scoring with --context 6 (its eval_context: 4) as given, not the checkpoint's"
    ]

    scored = {}

    def stop(*args, **kwargs):  # what compare_models is asked to score with, before any work
        scored.update(kwargs)
        raise RuntimeError("stop")

    monkeypatch.setattr(evaluate, "compare_models", stop)
    with pytest.raises(RuntimeError, match="stop"):
        evaluate.main(["--out", str(tmp_path / "plain")])  # without --checkpoint: world-eval's own defaults
    assert (scored["context"], scored["ks"], scored["stride"]) == (16, [1, 5, 10, 25, 50], 5)


def test_a_checkpoint_of_another_env_is_refused_up_front(fit_checkpoint, tmp_path, no_work):
    match = "checkpoint .* was trained on Pendulum-v1; pass --env Pendulum-v1"
    with pytest.raises(ValueError, match=match):
        evaluate.main(["--checkpoint", str(fit_checkpoint), "--env", "CartPole-v1", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match=match):
        mpc.main(["--checkpoint", str(fit_checkpoint), "--env", "CartPole-v1", "--out", str(tmp_path / "p.json")])


def test_plan_takes_the_env_from_the_checkpoint_and_warns_about_training_flags(fit_checkpoint, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        settings = mpc.parse_args(["--checkpoint", str(fit_checkpoint), "--eval-episodes", "0"])
    assert settings.env == "Pendulum-v1" and settings.out == "runs/plan/Pendulum-v1_mpc.json"
    with pytest.warns(UserWarning, match=r"no collection or training, so --hidden-size, --lr are ignored") as caught:
        mpc.parse_args(["--checkpoint", str(fit_checkpoint), "--hidden-size", "8", "--lr", "0.1"])
    assert len([w for w in caught if "ignored" in str(w.message)]) == 1
    out = tmp_path / "p.json"
    report = mpc.main(["--checkpoint", str(fit_checkpoint), "--eval-episodes", "0", "--out", str(out)])
    assert report["env"] == "Pendulum-v1" and out.is_file() and out.with_suffix(".png").is_file()
    assert json.loads(out.read_text())["machine"]["torch_threads"] == torch.get_num_threads()


def test_checkpoints_of_other_models_and_missing_files_are_clear_errors(tmp_path):
    forecaster = foreign_checkpoint(
        tmp_path / "forecaster.ckpt",
        {"_class_path": "pararnn_ts.forecast.cli_module.ParaRNNForecaster", "context_length": 24},
    )
    plain = foreign_checkpoint(tmp_path / "plain.ckpt", {"context_length": 24, "hidden_size": 8})
    match = "forecaster.ckpt is a ParaRNNForecaster checkpoint, not a WorldModelModule one .*pararnn-ts fit -c"
    for verb in (evaluate.main, mpc.main):
        with pytest.raises(ValueError, match=match):
            verb(["--checkpoint", str(forecaster), "--out", str(tmp_path / "out.json")])
        with pytest.raises(ValueError, match=r"plain.ckpt is not a WorldModelModule checkpoint .*'context_length'"):
            verb(["--checkpoint", str(plain), "--out", str(tmp_path / "out.json")])
        with pytest.raises(FileNotFoundError, match="--checkpoint .*missing.ckpt does not exist"):
            verb(["--checkpoint", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "out.json")])


def test_plan_report_without_rounds_or_evaluation_plots_without_warnings(tmp_path):
    report = {"rounds": [], "random_return_mean": None, "eval": {"mean": None, "std": None, "returns": []}}
    report |= {"env": "Pendulum-v1", "planner": "cem", "reward": "learned", "real_steps": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mpc.plot_report(report, tmp_path / "report.png")
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


# ---- errors that name the fix -----------------------------------------------------------------------
def test_plan_refuses_unusable_envs_as_the_other_verbs_do(tmp_path, no_work):
    out = str(tmp_path / "p.json")
    with pytest.raises(ValueError, match="FrozenLake-v1 has a Discrete observation space; world models need a Box"):
        mpc.main(["--env", "FrozenLake-v1", "--out", out])
    with pytest.raises(ValueError, match=r"unknown Gymnasium env id 'Pendulum-v2' .*pprint_registry"):
        mpc.main(["--env", "Pendulum-v2", "--out", out])


def test_world_eval_names_its_own_flags_when_the_data_file_holds_another_collection(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "train_world_model", lambda *a, **k: pytest.fail("training started"))
    path = tmp_path / "pendulum.npz"
    collect("Pendulum-v1", 400, seed=0, num_envs=8, policy_name="random").save(path)
    with pytest.raises(ValueError, match=r"collected with num_steps=400, but this run asks for num_steps=800") as error:
        evaluate.main(["--data", str(path), "--steps", "800", "--models", "persistence", "--out", str(tmp_path / "o")])
    message = str(error.value)
    assert "another file to collect into (--data)" in message and "(--steps 400)" in message
    assert "--data.init_args" not in message and "--steps 800" not in message


# ---- plan's rounds ----------------------------------------------------------------------------------
def test_a_round_averages_whole_episodes_and_reports_the_one_cut_at_the_budget(tmp_path, monkeypatch, capsys):
    """CartPole pays 1 per step, so a return is an episode's length; the budget cuts the round's last episode."""
    monkeypatch.setattr(mpc, "train", lambda *args: SimpleNamespace(callback_metrics={}))  # planning is what counts
    settings = mpc.parse_args(
        ["--env", "CartPole-v1", "--initial-steps", "20", "--budget-steps", "60", "--round-steps", "40"]
        + ["--horizon", "1", "--population", "2", "--iterations", "1", "--elites", "1", "--context", "1"]
        + ["--hidden-size", "4", "--num-layers", "1"]
    )
    env = make_env("CartPole-v1")
    (round_,) = mpc.learn(settings, env).rounds
    cut = round_["cut_episode"]
    assert cut is not None and cut["return"] == cut["steps"] > 0  # not a whole episode: apart
    assert sum(round_["episode_returns"]) + cut["steps"] == 40 and len(round_["episode_returns"]) >= 1
    assert round_["mean_return"] == pytest.approx(np.mean(round_["episode_returns"]))
    assert f"whole episodes + 1 cut at the budget after {cut['steps']} steps" in capsys.readouterr().out
    report = {"rounds": [round_, round_ | {"mean_return": None}], "random_return_mean": None, "real_steps": 60}
    report |= {"eval": {"mean": None}, "env": "CartPole-v1", "planner": "cem", "reward": "learned"}
    mpc.plot_report(report, tmp_path / "rounds.png")  # a round without a whole episode is not plotted
    assert "(whole episodes)" not in mpc.MPCSettings.__dataclass_fields__["round_steps"].metadata["help"]


# ---- what plan records and writes -------------------------------------------------------------------
def test_a_plan_checkpoint_records_its_data_and_world_eval_scores_it_on_fresh_episodes_only(tmp_path, capsys):
    argv = ["--env", "CartPole-v1", "--initial-steps", "60", "--budget-steps", "90", "--round-steps", "20"]
    argv += ["--train-steps", "2", "--horizon", "2", "--population", "4", "--iterations", "1", "--elites", "2"]
    argv += ["--hidden-size", "4", "--num-layers", "1", "--eval-episodes", "0", "--seed", "3"]
    checkpoint = tmp_path / "model.ckpt"
    report = mpc.main([*argv, "--save-model", str(checkpoint), "--out", str(tmp_path / "p.json")])
    data = torch.load(checkpoint, weights_only=False)["datamodule_hyper_parameters"]
    assert data["num_steps"] == report["real_steps"] == 90 and data["test_fraction"] == 0
    assert data["trajectories"] == {"in_memory": True, "policy": "mixed", "seed": 3, "num_envs": 8}
    scored = ["--checkpoint", str(checkpoint), "--models", "persistence", "pararnn", "--context", "2", "--ks", "1"]
    fix = r"no test episodes of its own .* pass fresh ones: --steps N --seed S \(random-policy episodes, S other than 3"
    for more in ([], ["--steps", "400"], ["--steps", "400", "--seed", "3"]):
        with pytest.raises(ValueError, match=r"trained on all 90 steps of its data \(policy 'mixed', seed 3\).*" + fix):
            evaluate.main([*scored, *more, "--out", str(tmp_path / "refused")])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "(trained: ...)" warning about a record that was wrong
        results = evaluate.main([*scored, "--steps", "400", "--seed", "4", "--out", str(tmp_path / "scored")])
    assert results["num_steps"] == 400 and results["errors"]["ParaGRU"]["1"] is not None


def test_plan_refuses_output_names_that_coincide_before_any_work(tmp_path, no_work):
    for argv, clash in (
        (["--out", "r.png"], r"the JSON report \(--out\) and its plot \(\.png\) would both be written to r\.png"),
        (["--out", "r.gif", "--video"], r"the JSON report \(--out\) and the --video GIF \(\.gif\) would both be"),
        (["--save-model", "r.json", "--out", "r.json"], r"the JSON report \(--out\) and the --save-model checkpoint"),
    ):
        with pytest.raises(ValueError, match=clash):
            mpc.main([*argv, "--overwrite"])
    with pytest.raises(ValueError, match=r"r\.png; pass --out \S*r\.json$"):
        mpc.main(["--out", str(tmp_path / "r.png")])
    assert not list(tmp_path.iterdir())


def test_plan_with_a_checkpoint_reports_the_settings_it_used(fit_checkpoint, tmp_path):
    """The checkpoint's model, not the ignored --hidden-size; no training settings (none were used)."""
    out = tmp_path / "p.json"
    argv = ["--checkpoint", str(fit_checkpoint), "--eval-episodes", "0", "--hidden-size", "99", "--out", str(out)]
    with pytest.warns(UserWarning, match="--hidden-size is ignored"):
        mpc.main(argv)
    settings = json.loads(out.read_text())["settings"]
    assert (settings["hidden_size"], settings["num_layers"], settings["cell"]) == (4, 1, "gru")
    assert settings["budget_steps"] is None and settings["train_steps"] is None and settings["window"] is None
    assert settings["checkpoint"] == str(fit_checkpoint) and settings["horizon"] == 25


def test_world_eval_says_how_to_flatten_an_unusable_env_before_any_work(tmp_path, no_work):
    with pytest.raises(ValueError, match=r"Blackjack-v1 has a Tuple .*pararnn-ts verbs take ids of envs with 1-D Box"):
        evaluate.main(["--env", "Blackjack-v1", "--out", str(tmp_path)])
