"""The base class of every recurrence: declare ``f`` and its Jacobian structure, get every mode."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..ops import fused as fused_ops
from .autograd import (
    apply_recurrence,
    call_with_parameters,
    narrower,
    parallel_solve,
    sequential_solve,
    settle,
    widened,
)
from .checks import all_finite, autocast_enabled, capturing, check_state_device, functorch_wrapped, named_weights
from .contract import CHECKS, MODE_CHECKS, check_contract, check_declaration, check_state
from .newton import SolverStats, default_tol
from .structure import Diagonal, Structure

Mode = Literal["auto", "sequential", "parallel", "fused"]
Fallback = Literal["sequential", "warn", "raise"]
MODES = ("auto", "sequential", "parallel", "fused")
FALLBACKS = ("sequential", "warn", "raise")


class ParaCell(nn.Module):
    """A recurrence ``h_t = f(h_{t-1}, u_t)`` on time-parallel inputs ``u_t = project(x_t)``.

    Subclasses set :attr:`structure` and :attr:`state_shape`, and implement :meth:`recurrence`
    (batched over any leading dimensions). Everything else has a default: :meth:`project` is the
    identity, :meth:`jacobian` comes from forward-mode AD, the backward of the parallel mode from
    the adjoint scan.

    The contract: :meth:`recurrence` reads only ``h_prev``, ``u`` and the cell's own parameters and
    buffers (the parallel backward differentiates only ``u``, the initial state and ``cell.parameters()``;
    anything else that requires grad, e.g. ``self.cond = emb.sigmoid()`` set by an outer model, would
    lose its gradient: feed it through ``u``), and its derivative in ``h_prev`` has the declared
    :attr:`structure` (a hand-written :meth:`jacobian` must be that derivative). The first solves check
    both on a slice of their inputs (a few steps of the first two sequences, once per cell; see
    :mod:`pararnn_ts.core.contract`), every parallel backward checks the derivative it used, and each raises a
    ``ValueError`` naming the fix.

    Args:
        mode: ``"sequential"`` (plain loop, autograd through it), ``"parallel"`` (Newton + scans,
            adjoint backward), ``"fused"`` (a native kernel of :mod:`pararnn_ts.ops`: the fused
            sequential C++ kernel on CPU; on GPU fused Newton kernels, or Triton's fused sequential
            ones when batch × channels fill the GPU, see ``last_stats.algorithm``) or ``"auto"`` (fused where
            the cell has a kernel and a backend can run it, else parallel on GPU and sequential on
            CPU). ``"fused"`` where no kernel can run warns once and runs what ``"auto"`` would.
        tol: Newton stops when ``max_t ‖r_t‖_∞ ≤ tol · max(1, ‖h‖_∞)``; default 32 ε of the
            solve dtype.
        max_iters: most Newton updates per solve.
        fallback: what to do when Newton has not converged after ``max_iters``:
            ``"sequential"`` recomputes with the loop (warning once per cell), ``"warn"`` warns and returns the last
            iterate, ``"raise"`` raises :class:`~pararnn_ts.core.newton.NewtonConvergenceError`.
        chunk_size: the parallel mode solves time chunks of this many steps one after the other,
            each from the exact final state of the previous one; ``"auto"`` (default) picks chunks
            of about :attr:`CPU_CHUNK_ELEMENTS` Jacobian values on CPU (64 steps at least), so Newton's passes stay
            in cache, and the whole sequence at once on GPU; ``None`` never chunks.
        check_inputs: validate shapes and finiteness of inputs, and that the solve's trajectory is finite (one
            pass over each).
        fused_backend: which fused backend ``"fused"``/``"auto"`` may use: ``"auto"`` (the
            fastest available for the device), ``"cpu"``, ``"triton"`` or ``"cuda"``.
        check_contract: check, once per cell on its first solves, that :attr:`structure`,
            :attr:`state_shape`, :meth:`recurrence` and :meth:`jacobian` agree and that
            :meth:`recurrence` reads no tensor requiring grad besides ``h_prev``, ``u`` and the cell's
            parameters (a few steps of two sequences; skipped under torch.compile and CUDA graph capture), that
            :meth:`step`'s first call returns a state, and in every parallel backward that the adjoint solved
            with the declared Jacobian agrees with autograd's derivative of :meth:`recurrence`; ``False`` skips
            them.

    ``cell.last_stats`` tells what the last solve ran (mode, backend, Newton iterations, residual): the last
    :meth:`forward` or :meth:`solve`; :meth:`step`, one application of the recurrence, leaves it as it was.
    """

    #: state values per chunk for ``chunk_size="auto"`` on CPU (4 MiB of float32)
    CPU_CHUNK_ELEMENTS = 2**20

    structure: Structure = Diagonal()
    #: size of the last dimension of ``x`` (``None``: not checked)
    input_size: int | None = None
    #: the kernel of :mod:`pararnn_ts.ops` computing this recurrence (``None``: no fused kernel)
    fused_kernel: str | None = None
    #: the methods whose maths a fused kernel and a hand-written :meth:`jacobian` repeat: a subclass that overrides
    #: one of them drops both (a cell whose recurrence calls other methods names them too)
    kernel_replicates: tuple[str, ...] = ("recurrence",)
    #: why a subclass no longer uses its parent's fused kernel: ``(parent class, the method it overrides)``
    _kernel_of_parent: tuple[str, str] | None = None
    #: the rows of every fused weight are norm-clipped to this in each solve (``None``: not clipped)
    max_norm: float | None = None
    #: the first-use checks of :mod:`~pararnn_ts.core.contract` still to run (none for a cell unpickled from
    #: before they existed)
    _contract_pending: set[str] | frozenset[str] = frozenset()
    #: whether :meth:`step` has checked what :meth:`recurrence` returns (once per cell)
    _step_checked: bool = False
    #: whether the first state was made after :func:`~pararnn_ts.core.contract.check_declaration` passed
    _declaration_checked: bool = False
    #: whether a solve of this cell has warned that Newton did not converge (once per cell)
    _fallback_warned: bool = False

    def __init__(
        self,
        *,
        mode: Mode = "auto",
        tol: float | None = None,
        max_iters: int = 12,
        fallback: Fallback = "sequential",
        chunk_size: int | Literal["auto"] | None = "auto",
        check_inputs: bool = True,
        fused_backend: fused_ops.Backend = "auto",
        check_contract: bool = True,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not one of {MODES}")
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback={fallback!r} is not one of {FALLBACKS}")
        if max_iters < 1:
            raise ValueError(f"max_iters must be >= 1, got {max_iters}")
        if tol is not None and not tol > 0:
            raise ValueError(f"tol must be > 0 (or None for the dtype default), got {tol}")
        if fused_backend not in fused_ops.BACKENDS:
            raise ValueError(f"fused_backend={fused_backend!r} is not one of {fused_ops.BACKENDS}")
        if not (chunk_size in ("auto", None) or (isinstance(chunk_size, int) and chunk_size >= 1)):
            raise ValueError(f'chunk_size must be a positive int, "auto" or None, got {chunk_size!r}')
        self.mode = mode
        self.tol = tol
        self.max_iters = max_iters
        self.fallback = fallback
        self.chunk_size = chunk_size
        self.check_inputs = check_inputs
        self.fused_backend = fused_backend
        self.check_contract = check_contract
        self.last_stats: SolverStats | None = None
        self._contract_pending = set(CHECKS)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that overrides :meth:`recurrence` (or another of :attr:`kernel_replicates`) drops what it
        inherits for its parent's recurrence: the parent's fused kernel and hand-written :meth:`jacobian` (unless it
        sets or overrides them itself)."""
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        overridden = next((name for name in cls.kernel_replicates if name in own), None)
        if overridden is not None:
            if "fused_kernel" not in own and cls.fused_kernel is not None:
                cls.fused_kernel = None
                parent = next(c.__name__ for c in cls.__mro__[1:] if "fused_kernel" in vars(c))
                cls._kernel_of_parent = (parent, overridden)
            if "jacobian" not in own and cls.jacobian is not ParaCell.jacobian:
                cls.jacobian = ParaCell.jacobian

    def __prepare_scriptable__(self) -> ParaCell:
        """``torch.jit.script`` (also of a module holding a cell) calls this first: refuse, naming what works."""
        raise TypeError(
            f"{type(self).__name__} cannot be compiled by torch.jit.script: its solvers are Python code that "
            "TorchScript does not support (and PyTorch has deprecated torch.jit). Use torch.compile, or torch.export "
            "for a graph to save"
        )

    # ---- what a cell declares -------------------------------------------------------------
    @property
    def state_shape(self) -> tuple[int, ...]:
        """Shape of one state, without the batch dimension: ``(D,)`` or ``(D, k)``."""
        raise NotImplementedError(self._abstract("the property state_shape → the shape of one state, e.g. (D,)"))

    def recurrence(self, h_prev: Tensor, u: Tensor) -> Tensor:
        """``f(h_prev, u)``: ``(..., *S)``, ``(..., *U)`` → ``(..., *S)``."""
        raise NotImplementedError(self._abstract("recurrence(h_prev, u) → h"))

    # ---- what a cell may override ---------------------------------------------------------
    def project(self, x: Tensor) -> Tensor:
        """Time-parallel input map ``x (..., input_size)`` → ``u (..., *U)``; identity by default."""
        return x

    def jacobian(self, h_prev: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(h_prev, u), ∂f/∂h_prev)`` in the layout of :attr:`structure`; forward-mode AD by default."""
        try:
            return self.structure.jacobian_from_jvp(lambda h: self.recurrence(h, u), h_prev)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, NotImplementedError) as err:
            with torch.no_grad():
                self.recurrence(h_prev, u)  # fails too (a bug of its own): that error, not the one of forward mode
            name = type(self).__name__
            raise ValueError(
                f"{name}.recurrence runs, but torch.func forward-mode AD (torch.func.jvp), which computes the "
                f"Jacobian of its declared structure {self.structure} for the parallel mode, cannot differentiate "
                "it (e.g. it calls a torch.autograd.Function with no setup_context and jvp staticmethods, or an op "
                f"with no forward-mode derivative). Fix: write a jacobian(h_prev, u) method on {name} returning "
                f"(recurrence(h_prev, u), ∂f/∂h_prev) in the layout of {self.structure}, give the autograd.Function "
                'setup_context and jvp, or use mode="sequential". The error: ' + str(err).split("\n")[0]
            ) from err

    def fused_weights(self, clip: bool = True) -> tuple[Tensor, ...]:
        """The tensors :attr:`fused_kernel` takes besides ``u`` and ``h0`` (differentiable); ``clip=False``:
        before their rows are norm-clipped to :attr:`max_norm` (the fused solve clips them itself)."""
        raise NotImplementedError(f"{type(self).__name__} has no fused kernel")

    @property
    def output_size(self) -> int:
        """Features of ``y`` per step: the state's size, flattened."""
        return math.prod(self.state_shape)

    def output(self, h: Tensor) -> Tensor:
        """Output ``y`` from states ``(..., *S)``: the state with its trailing dims flattened."""
        return h.flatten(h.dim() - len(self.state_shape)) if len(self.state_shape) > 1 else h

    def state_to_tensor(self, state: Any) -> Tensor:
        """User-facing state → ``(B, *S)`` tensor (ParaLSTM: ``(c, h)`` pair → stacked)."""
        if not isinstance(state, Tensor):
            name, shape = type(self).__name__, ", ".join(map(str, self.state_shape))
            raise TypeError(f"{name}: state must be a Tensor (batch, {shape}), got {type(state).__name__}")
        return state

    def tensor_to_state(self, h: Tensor) -> Any:
        """``(B, *S)`` tensor → user-facing state."""
        return h

    # ---- what every cell gets -------------------------------------------------------------
    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """Run the whole sequence.

        Args:
            x: ``(B, T, input_size)``.
            state: initial state (``(B, *S)`` tensor, or the cell's own form); zeros if ``None``.

        Returns:
            ``y`` ``(B, T, ...)`` and the final state.
        """
        if self.check_inputs:
            self._check_x(x, "x", ndim=3)
        h0 = self._initial_state(state, x)  # before the projection: a bad state fails with no compute
        h = self.solve(self.project(x), h0)
        return self.output(h), self.tensor_to_state(h[:, -1].clone())  # owns its memory, as nn.GRU's h_n does

    def step(self, x_t: Tensor, state: Any = None) -> Any:
        """One step for decoding and closed-loop rollouts: ``x_t`` ``(B, input_size)`` → next state."""
        if self.check_inputs:
            self._check_x(x_t, "x_t", ndim=2)
        h0 = self._initial_state(state, x_t, "x_t")
        u = self.project(x_t)
        with self._solve_precision(u) as dtype:
            h_prev = h0.to(dtype)
            reads = widened(self, dtype) if self._holds_narrower(dtype) else {}  # no dicts in the common case
            h = call_with_parameters(self, reads, apply_recurrence, h_prev, u.to(dtype))
            if self.check_contract and not self._step_checked:  # shapes and dtypes only: no data read
                check_state(type(self).__name__, h, h_prev, u)
                self._step_checked = True
        return self.tensor_to_state(self._output_dtype(h, u))

    def solve(self, u: Tensor, h0: Tensor, mode: Mode | None = None) -> Tensor:
        """Solve for all states ``(B, T, *S)`` given ``u`` ``(B, T, *U)`` and ``h0`` ``(B, *S)``."""
        with self._solve_precision(u) as dtype:
            requested = mode or self.mode
            mode, backend = self.resolve_backend(u.device, dtype, mode)
            if mode != "sequential" and self._loop_only(u, h0, requested, mode, backend):
                mode, backend = "sequential", "pytorch"
            h0 = _cast(h0, dtype)
            if self.check_contract and not self._contract_pending.isdisjoint(MODE_CHECKS[mode]):
                # until each check has run once; at the parameters the solve reads
                call_with_parameters(self, widened(self, dtype), check_contract, mode, u, h0, self._contract_pending)
            if mode == "fused":
                h = self._fused_solve(backend, u, h0, dtype)
            elif mode == "sequential":
                h = sequential_solve(self, u.to(dtype), h0)
                self.last_stats = SolverStats("sequential", algorithm="sequential")
            else:
                h, self.last_stats = parallel_solve(self, u.to(dtype), h0, self.resolve_chunk_size(u))
        if self.check_inputs and not all_finite(h):
            self._refuse_non_finite(h, u, h0)
        return self._output_dtype(h, u)

    def resolve_backend(
        self, device: torch.device, dtype: torch.dtype = torch.float32, mode: Mode | None = None
    ) -> tuple[str, str]:
        """``(mode, backend)`` a solve in ``dtype`` on ``device`` will run; backend ``"pytorch"`` unless fused."""
        mode = mode or self.mode
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not one of {MODES}")
        if mode not in ("auto", "fused"):
            return mode, "pytorch"
        backend, why = self._fused_backend_for(device, dtype)
        if backend is not None:
            return "fused", backend
        pytorch_mode = "parallel" if device.type == "cuda" else "sequential"
        # asked for by name (mode="fused", or a fused_backend): say why it does not run; on meta a solve only gives
        # the shapes
        asked = 'mode="fused"' if mode == "fused" else f'fused_backend="{self.fused_backend}"'
        if (mode == "fused" or self.fused_backend != "auto") and device.type != "meta":
            fused_ops.warn_once(
                (type(self).__name__, why),
                f'{type(self).__name__}: {asked} cannot run here ({why}); using mode="{pytorch_mode}"',
            )
        return pytorch_mode, "pytorch"

    def _fused_backend_for(self, device: torch.device, dtype: torch.dtype) -> tuple[str | None, str]:
        if self.fused_kernel is None:
            if self._kernel_of_parent is not None:
                parent, method = self._kernel_of_parent
                return None, f"{type(self).__name__} overrides {method}, so the fused kernel of {parent} is not its"
            return None, f"{type(self).__name__} has no fused kernel"
        if device.type != "cpu" and dtype != torch.float32:
            return None, f"the GPU kernels compute in float32, not {dtype}"
        return fused_ops.select_backend(device, self.fused_backend)

    def _fused_solve(self, backend: str, u: Tensor, h0: Tensor, dtype: torch.dtype) -> Tensor:
        # GPU kernels read bf16/fp16 inputs as they are; the CPU kernel computes in the solve dtype.
        keep = u.device.type != "cpu" and u.dtype in (torch.bfloat16, torch.float16)
        u_k = u if keep else _cast(u, dtype)
        weights = tuple(_cast(w, dtype) for w in self.fused_weights(clip=False))
        tol = self.resolved_tol(dtype)
        kernel = self.fused_kernel
        exact = capturing(u)  # Newton's residual would be read on the host, which CUDA graph capture forbids
        h, raw = fused_ops.fused_solve(backend, kernel, u_k, h0, weights, tol, self.max_iters, self.max_norm, exact)
        if raw is None:
            self.last_stats = SolverStats("fused", backend=backend, algorithm="sequential")
            return h
        residual, iterations = raw.tolist()
        stats = SolverStats("fused", backend, iterations=int(iterations), residual=residual, converged=residual <= tol)
        self.last_stats = stats

        def exact() -> Tensor:
            if not fused_ops.has_exact_kernels(backend):
                return sequential_solve(self, u.to(dtype), h0)
            return fused_ops.fused_solve(backend, kernel, u_k, h0, weights, tol, self.max_iters, self.max_norm, True)[0]

        return settle(self, stats, u_k, h, exact)

    def _loop_only(self, u: Tensor, h0: Tensor, requested: str, mode: str, backend: str) -> bool:
        """Whether only the sequential loop can solve ``u`` ``(B, T, ...)`` from ``h0`` here, rather than ``mode``
        on ``backend``; warns once why if ``requested`` named another mode and there is something to solve."""
        if u.shape[0] == 0 or u.device.type == "meta":  # nothing to solve: the loop gives the shapes
            return True
        if torch.compiler.is_exporting():
            why = "torch.export"
        elif functorch_wrapped(u, h0, *named_weights(self).values(), *self.buffers()):  # the solves' Functions have
            why = "a torch.func transform (grad, vjp, jacrev, jacfwd, vmap)"  # no functorch rules
        elif capturing(u) and not (mode == "fused" and fused_ops.has_exact_kernels(backend)):
            why = "CUDA graph capture (Newton reads its residual on the host)"  # the exact fused kernels read none
        else:
            return False
        if requested != "auto":
            name = type(self).__name__
            message = f'{name}: mode="{requested}" cannot run under {why}; using mode="sequential"'
            fused_ops.warn_once((name, f"{requested} under {why}"), message)
        return True

    def _holds_narrower(self, dtype: torch.dtype) -> bool:
        """Whether a parameter or buffer of the cell (a DataParallel replica's weights too) is narrower than
        ``dtype``: read on every call, as assignment, ``load_state_dict(assign=True)`` or ``functional_call`` may
        change them."""
        if getattr(self, "_is_replica", False):
            tensors = itertools.chain(named_weights(self).values(), self.buffers())
        elif self._modules:
            tensors = itertools.chain(self.parameters(), self.buffers())
        else:  # no submodules (ParaGRU, ParaLSTM): its own dicts, without parameters()' walk (2 µs a step)
            tensors = itertools.chain(self._parameters.values(), self._buffers.values())
        return any(t is not None and narrower(t.dtype, dtype) for t in tensors)

    def resolve_chunk_size(self, u: Tensor) -> int | None:
        """Steps per chunk of the parallel solve of ``u`` ``(B, T, ...)``; ``None``: the whole sequence."""
        if self.chunk_size != "auto":
            return self.chunk_size
        if u.device.type == "cuda":
            return None
        per_step = math.prod(self.structure.jacobian_shape(self.state_shape))  # D, D·k² or N² values
        return max(64, self.CPU_CHUNK_ELEMENTS // (u.shape[0] * per_step))

    def resolved_tol(self, dtype: torch.dtype) -> float:
        return self.tol if self.tol is not None else default_tol(dtype)

    def extra_repr(self) -> str:
        shown = f"structure={self.structure}, mode={self.mode!r}, max_iters={self.max_iters}, "
        shown += f"fallback={self.fallback!r}"
        defaults = {
            "tol": None,
            "chunk_size": "auto",
            "check_inputs": True,
            "check_contract": True,
            "fused_backend": "auto",
        }
        changed = {name: getattr(self, name) for name, default in defaults.items() if getattr(self, name) != default}
        return shown + "".join(f", {name}={value!r}" for name, value in changed.items())

    # ---- helpers --------------------------------------------------------------------------
    def _abstract(self, member: str) -> str:
        name = type(self).__name__
        return f"{name} must implement {member} (see ParaCell and pararnn_ts/cells/oscillator.py)"

    @staticmethod
    @contextmanager
    def _solve_precision(u: Tensor) -> Iterator[torch.dtype]:
        """Yields the solve dtype (float32 or wider) with autocast off inside the solve."""
        device = u.device.type
        off = torch.autocast(device, enabled=False) if autocast_enabled(device) else nullcontext()
        with off:
            yield torch.promote_types(u.dtype, torch.float32)

    @staticmethod
    def _output_dtype(h: Tensor, u: Tensor) -> Tensor:
        # Under autocast the float32 result stays float32; otherwise return the input's dtype.
        return h if autocast_enabled(u.device.type) else _cast(h, u.dtype)

    def _initial_state(self, state: Any, x: Tensor, x_name: str = "x") -> Tensor:
        """The state ``(B, *S)`` to start from: ``state`` checked (device, shape, values) and converted, or zeros."""
        if self.check_contract and not self._declaration_checked:
            check_declaration(self)  # state_shape is read here first
            self._declaration_checked = True
        batch = x.shape[0]
        if state is None:
            dtype = torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float32
            return torch.zeros(batch, *self.state_shape, dtype=dtype, device=x.device)
        check_state_device(type(self).__name__, state, x, x_name)
        h0 = self.state_to_tensor(state)
        if not h0.is_floating_point():
            name = type(self).__name__
            raise TypeError(f"{name}: state is {h0.dtype}; pass a floating-point state (e.g. h0.float())")
        expected = (batch, *self.state_shape)
        if tuple(h0.shape) != expected:  # shapes in the user's form of the state (ParaLSTM: the pair (c, h))
            wanted = _shapes(self.tensor_to_state(torch.empty(expected, device="meta")))
            raise ValueError(
                f"{type(self).__name__}: state has shape {_shapes(state)}, expected {wanted} for {x_name}'s batch of "
                f"{batch}; pass None to start from zeros"
            )
        if self.check_inputs and not all_finite(h0):
            raise ValueError(f"{type(self).__name__}: state contains NaN or inf")
        return h0

    def _refuse_non_finite(self, h: Tensor, u: Tensor, h0: Tensor) -> None:
        """Raise a ``ValueError`` naming where the trajectory ``h`` ``(B, T, *S)`` of the solve of ``u`` from ``h0``
        first has a NaN or an infinity, and what made it."""
        name = type(self).__name__
        bad = ~torch.isfinite(h.detach()).flatten(2).all(-1)  # (B, T)
        t = int(bad.any(0).nonzero()[0])
        row = int(bad[:, t].nonzero()[0])
        where = f"at step {t} (of T={h.shape[1]}) in batch row {row}"
        for what, t_in in (("the inputs u of the solve (project(x) in forward)", u), ("the initial state", h0)):
            if not all_finite(t_in):
                raise ValueError(
                    f"{name}: {what} contain NaN or inf, and so does the trajectory, first {where}: a parameter of "
                    "the projection may be NaN or inf (training diverged: lower the learning rate or clip gradients)"
                )
        stats = self.last_stats
        if stats is not None and stats.algorithm == "newton" and not (stats.converged or stats.fell_back):
            raise ValueError(
                f"{name}: the last Newton iterate, returned by fallback='warn' after Newton did not converge "
                f"(residual {stats.residual:.3g}), has NaN or inf {where}; use fallback='sequential' (the default) "
                "for the exact trajectory"
            )
        nan = [n for n, p in named_weights(self).items() if not all_finite(p)]
        before = h[row, t - 1] if t > 0 else h0[row]
        cause = (
            f"the parameters {', '.join(nan)} have NaN or inf (training diverged: lower the learning rate or clip "
            "gradients)"
            if nan
            else f"e.g. an overflow (|h| grows: max |h| before that step is {before.detach().abs().max().item():.3g}) "
            "or an op outside its domain (log, sqrt or division of a value it reaches)"
        )
        raise ValueError(
            f"{name}.recurrence produced NaN or inf {where} from finite inputs and state: {cause}. "
            "ParaCell(check_inputs=False) skips this check"
        )

    def _check_x(self, x: Tensor, name: str, ndim: int) -> None:
        layout = "(batch, time, input_size)" if ndim == 3 else "(batch, input_size)"
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__}: {name} must be a Tensor {layout}, got {type(x).__name__}")
        if x.dim() != ndim:
            raise ValueError(f"{type(self).__name__}: {name} must be {layout}, got shape {tuple(x.shape)}")
        if ndim == 3 and x.shape[1] == 0:
            raise ValueError(f"{type(self).__name__}: {name} has no time steps (shape {tuple(x.shape)})")
        if self.input_size is not None and x.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}: {name} has {x.shape[-1]} features in its last dimension, "
                f"expected input_size={self.input_size}"
            )
        if not all_finite(x):
            if x.requires_grad:  # computed by layers being trained, not the user's data
                raise ValueError(
                    f"{type(self).__name__}: {name} contains NaN or inf, and it comes from trainable layers (it "
                    "requires grad): training has likely diverged; lower the learning rate or clip gradients "
                    "(--trainer.gradient_clip_val), or look for NaN in the data those layers read"
                )
            raise ValueError(f"{type(self).__name__}: {name} contains NaN or inf; clean or mask the input first")


def _shapes(state: Any) -> tuple:
    """The shape of a state tensor, or the shapes of a tuple or list of them (for messages)."""
    if isinstance(state, (tuple, list)):
        return tuple(_shapes(part) for part in state)
    return tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)`` without the call when it is already ``dtype`` (a short GPU solve is host-bound)."""
    return t if t.dtype == dtype else t.to(dtype)
