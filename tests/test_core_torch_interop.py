"""The cells as ordinary torch modules: checkpointing, torch.func, torch.export, meta tensors, empty batches."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import make_cell, rel_err
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.checkpoint import checkpoint

from pararnn_ts.core import cell as cell_module
from pararnn_ts.core.checks import capturing
from pararnn_ts.ops import fused as fused_ops

MODES = ("auto", "sequential", "parallel", "fused")


def modes_of(cell) -> list[str]:
    """The modes that run ``cell`` as asked (no fused kernel: ``fused`` would warn and run the loop)."""
    return [m for m in MODES if m != "fused" or cell.fused_kernel]


def test_non_reentrant_checkpointing_works_from_the_first_call(cell_name):
    """The first solve runs the contract checks; an enclosing checkpoint must not count the tensors they save."""
    x = torch.randn(3, 17, make_cell(cell_name).input_size, dtype=torch.float64)
    ref = make_cell(cell_name, mode="sequential")
    ref(x)[0].square().sum().backward()
    for mode in modes_of(ref):
        cell = make_cell(cell_name, mode=mode)
        with torch.no_grad():
            cell(x[:, :5])  # a warm-up without grad (Lightning's sanity check) leaves the gradient checks pending
        checkpoint(lambda x, cell=cell: cell(x)[0], x, use_reentrant=False).square().sum().backward()
        for (name, p), q in zip(cell.named_parameters(), ref.parameters(), strict=True):
            assert rel_err(q.grad, p.grad) < 1e-9, (mode, name)


def test_an_empty_batch_gives_empty_outputs_in_every_mode(cell_name):
    cell = make_cell(cell_name)
    for mode in modes_of(cell):
        for chunk_size in ("auto", None):
            cell.mode, cell.chunk_size = mode, chunk_size
            y, _ = cell(torch.randn(0, 5, cell.input_size, dtype=torch.float64))
            assert y.shape == (0, 5, cell.output_size), (mode, chunk_size)


def test_a_forward_on_the_meta_device_gives_the_shapes(cell_name):
    cell = make_cell(cell_name).to("meta")
    for mode in modes_of(cell):
        cell.mode = mode
        y, _ = cell(torch.randn(2, 5, cell.input_size, device="meta", dtype=torch.float64))
        assert y.shape == (2, 5, cell.output_size) and y.is_meta, mode


def test_torch_func_transforms_run_the_loop_and_say_so_when_a_mode_was_named(cell_name, monkeypatch):
    """grad and jacrev (autograd Functions with no functorch rules) give the sequential loop's derivatives."""
    monkeypatch.setattr(fused_ops, "_warned", set())  # warned once per process: not by an earlier test
    cell = make_cell(cell_name)
    x = torch.randn(2, 6, cell.input_size, dtype=torch.float64)
    params = {n: p.detach() for n, p in cell.named_parameters()}

    def derivatives(mode: str) -> list[torch.Tensor]:
        cell.mode = mode
        grads = torch.func.grad(lambda p: torch.func.functional_call(cell, p, (x,))[0].square().sum())(params)
        jacobian = torch.func.jacrev(lambda x: cell(x)[0])(x[:1, :3])
        return [*grads.values(), jacobian]

    ref = derivatives("sequential")
    for mode in modes_of(cell):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = derivatives(mode)
        for a, b in zip(ref, got, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=mode)
        said = [str(w.message) for w in caught if "torch.func transform" in str(w.message)]
        if mode in ("parallel", "fused"):
            assert said and f'mode="{mode}" cannot run under' in said[0] and 'using mode="sequential"' in said[0]
        else:
            assert not said, mode


@pytest.mark.parametrize("mode", ["sequential", "parallel", "fused"])
def test_torch_export_gives_the_eager_outputs(mode, monkeypatch):
    """A named parallel or fused mode says that the loop is exported, at the line that exports (not at the code
    torch.export generates, ``<string>``)."""
    monkeypatch.setattr(fused_ops, "_warned", set())  # warned once per process: not by an earlier test
    cell = make_cell("paragru", torch.float32, mode=mode)
    x = torch.randn(3, 17, cell.input_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exported = torch.export.export(cell, (x,))
    said = [w for w in caught if "cannot run under torch.export" in str(w.message)]
    assert [w.filename for w in said] == ([] if mode == "sequential" else [__file__])
    other = torch.randn(3, 17, cell.input_size)
    y, last = exported.module()(other)
    y_eager, last_eager = cell(other)
    assert rel_err(y_eager, y) < 1e-5 and rel_err(last_eager, last) < 1e-5


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("cell_name", ["paragru", "oscillator"])
def test_torch_jit_trace_of_a_fresh_cell_gives_the_eager_outputs(cell_name):
    """The first-use checks wait for an eager call: run under the tracer, forward-mode AD crashed the process."""
    cell = make_cell(cell_name, torch.float32, mode="parallel")
    traced = torch.jit.trace(cell, torch.randn(3, 17, cell.input_size))
    other = torch.randn(3, 17, cell.input_size)
    y, last = traced(other)
    y_eager, last_eager = cell(other)
    assert rel_err(y_eager, y) < 1e-5 and rel_err(last_eager, last) < 1e-5


def test_torch_jit_script_is_refused_naming_what_works(cell_name):
    """TorchScript cannot compile the Python solvers: refused up front, also for a module holding a cell, instead of
    an error from deep inside the cell's code."""
    cell = make_cell(cell_name)
    holder = torch.nn.Sequential(torch.nn.Identity(), cell)
    for module in (cell, holder):
        with pytest.raises(TypeError, match=rf"{type(cell).__name__} cannot be compiled by torch.jit.script.*compile"):
            torch.jit.script(module)


@pytest.mark.parametrize("mode", ["parallel", "auto"])
def test_under_cuda_graph_capture_newton_gives_way_to_the_loop(mode, monkeypatch):
    """Newton reads its residual on the host, which CUDA graph capture forbids: under capture (pretended here on
    the CPU) the parallel mode runs the loop instead, warning once where it was asked for by name."""
    cell = make_cell("paragru", torch.float64, mode=mode, fused_backend="auto")
    x = torch.randn(2, 9, cell.input_size, dtype=torch.float64)
    want, _ = make_cell("paragru", torch.float64, mode="sequential")(x)
    monkeypatch.setattr(cell_module, "capturing", lambda t: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y, _ = cell(x)
    assert cell.last_stats.algorithm == "sequential" and rel_err(want, y) < 1e-12
    named = [str(w.message) for w in caught if "CUDA graph capture" in str(w.message)]
    assert len(named) == (mode == "parallel")


def test_capture_is_not_asked_about_under_torch_compile(monkeypatch):
    """torch.compile would trace the question (a graph break, an error under fullgraph=True); its own CUDA graphs
    capture compiled code only."""
    with FakeTensorMode():
        x = torch.empty(2, device="cuda")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: pytest.fail("asked under compile"))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not capturing(x)
