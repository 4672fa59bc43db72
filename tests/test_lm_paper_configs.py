"""The paper-scale LM configs in experiments/lm/paper match arXiv 2510.21450 (ParaRNN), Tables 3-5.

Each config's model is built on the meta device (no memory, no download) and its parameters are
counted; the trainer and data sections are checked against the ``Trainer`` and ``TextDataModule``
signatures without instantiating them (the data paths are placeholders). The tables below are
typed in from the paper, via the project's notes (PAPER_NOTES.md, "Language-model recipe").
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule, Trainer

import pararnn_ts.lm  # noqa: F401  (lets the parser resolve TextDataModule)
from pararnn_ts.nn.backbone import LanguageModel

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "experiments" / "lm" / "paper"
CONFIGS = sorted(PAPER.glob("*.yaml"))

SCALES = ("400m", "1b", "2.9b", "7b")
ARCHS = ("paragru", "paralstm", "mamba2", "transformer")

#: Table 3: layers, heads, learning rate, weight decay
TABLE_3 = {
    "400m": {
        "paragru": (24, 4, 5e-3, 1e-3),
        "paralstm": (24, 4, 3e-3, 1e-3),
        "mamba2": (48, 32, 5e-3, 1e-3),
        "transformer": (24, 8, 3e-3, 1e-3),
    },
    "1b": {
        "paragru": (24, 4, 3e-3, 1e-4),
        "paralstm": (24, 4, 3e-3, 1e-4),
        "mamba2": (48, 64, 5e-3, 1e-4),
        "transformer": (24, 16, 2e-3, 1e-4),
    },
    "2.9b": {
        "paragru": (32, 2, 2e-3, 1e-4),
        "paralstm": (32, 2, 2e-3, 1e-4),
        "mamba2": (64, 80, 3e-3, 1e-4),
        "transformer": (32, 32, 3e-3, 1e-4),
    },
    "7b": {
        "paragru": (32, 4, 3e-3, 1e-4),
        "paralstm": (32, 4, 3e-3, 1e-4),
        "mamba2": (64, 128, 3e-3, 1e-4),
        "transformer": (32, 32, 3e-3, 1e-4),
    },
}

#: Table 4: nodes of 8 GPUs, batch per GPU, effective batch, z-loss, iterations, warm-up
TABLE_4 = {
    "400m": (1, 32, 256, 1e-4, 20_000, 2_000),
    "1b": (1, 32, 256, 1e-4, 55_000, 5_500),
    "2.9b": (4, 16, 512, 1e-4, 55_000, 5_500),
    "7b": (32, 8, 2_048, 5e-6, 33_000, 3_300),
}

#: Table 5: parameter counts
TABLE_5 = {
    "400m": {"transformer": 412e6, "paragru": 406e6, "paralstm": 406e6, "mamba2": 409e6},
    "1b": {"transformer": 1.44e9, "paragru": 1.42e9, "paralstm": 1.42e9, "mamba2": 1.43e9},
    "2.9b": {"transformer": 2.80e9, "paragru": 2.90e9, "paralstm": 2.90e9, "mamba2": 2.83e9},
    "7b": {"transformer": 6.89e9, "paragru": 6.76e9, "paralstm": 6.76e9, "mamba2": 6.96e9},
}

#: ``CausalLM`` arguments that are not ``LanguageModel``'s
TRAINING_KEYS = {"lr", "weight_decay", "betas", "warmup_fraction", "min_lr_ratio", "z_loss", "bytes_per_token"}


def scale_and_arch(config: Path) -> tuple[str, str]:
    scale, arch = config.stem.split("_")
    return scale, arch


def load(config: Path) -> dict:
    return yaml.safe_load(config.read_text())


def build_on_meta(init_args: dict) -> LanguageModel:
    kwargs = {key: value for key, value in init_args.items() if key not in TRAINING_KEYS | {"mixer_kwargs"}}
    with torch.device("meta"):
        return LanguageModel(**kwargs, **init_args.get("mixer_kwargs", {}))


def test_one_config_per_scale_and_architecture():
    assert [c.name for c in CONFIGS] == sorted(f"{scale}_{arch}.yaml" for scale in SCALES for arch in ARCHS)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_parameter_count_is_the_papers(config):
    scale, arch = scale_and_arch(config)
    model = build_on_meta(load(config)["model"]["init_args"])
    expected = TABLE_5[scale][arch]
    assert abs(model.num_parameters() / expected - 1) < 0.10, f"{model.num_parameters():,} vs {expected:,.0f}"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_model_and_optimiser_follow_table_3(config):
    scale, arch = scale_and_arch(config)
    model = load(config)["model"]
    args = model["init_args"]
    layers, heads, lr, weight_decay = TABLE_3[scale][arch]
    assert model["class_path"] == "pararnn_ts.lm.CausalLM"
    assert (args["mixer"], args["num_layers"], args["num_heads"]) == (arch, layers, heads)
    assert args["lr"] == pytest.approx(lr) and args["weight_decay"] == pytest.approx(weight_decay)
    assert args["vocab_size"] == 50_432 and args["tie_embeddings"] is False
    assert (args["mlp_ratio"] == 0) == (arch == "mamba2")  # Mamba2 blocks have no MLP


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_training_follows_table_4(config):
    scale, _ = scale_and_arch(config)
    sections = load(config)
    model, data, trainer = sections["model"]["init_args"], sections["data"]["init_args"], sections["trainer"]
    nodes, per_gpu, effective, z_loss, iterations, warmup = TABLE_4[scale]
    assert (trainer["num_nodes"], data["batch_size"], trainer["max_steps"]) == (nodes, per_gpu, iterations)
    gpus = trainer["devices"] * trainer["num_nodes"]
    assert data["batch_size"] * gpus * trainer["accumulate_grad_batches"] == effective
    assert model["warmup_fraction"] * iterations == pytest.approx(warmup)
    assert model["z_loss"] == pytest.approx(z_loss)
    assert data["seq_len"] == 2048 and trainer["precision"] == "bf16-mixed" and trainer["strategy"] == "fsdp"
    assert trainer["gradient_clip_val"] == 1.0


@pytest.fixture(scope="module")
def parser() -> ArgumentParser:
    parser = ArgumentParser(parser_mode="omegaconf", exit_on_error=False)
    parser.add_class_arguments(Trainer, "trainer", fail_untyped=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    return parser


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_trainer_and_data_sections_parse(config, parser):
    """Every key is one the ``Trainer`` or ``TextDataModule`` takes, with a value of its type."""
    sections = load(config)
    parsed = parser.parse_object({"trainer": sections["trainer"], "data": sections["data"]})
    assert parsed.data.class_path == "pararnn_ts.lm.TextDataModule"
