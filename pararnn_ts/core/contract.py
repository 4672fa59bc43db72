"""First-use checks that a cell keeps the :class:`~pararnn_ts.core.cell.ParaCell` contract.

A cell promises three things the solvers cannot see: its :attr:`structure` and :attr:`state_shape` agree and its
``recurrence`` returns a state; its Jacobian (declared structure, or hand-written :meth:`jacobian`) is the derivative
of its ``recurrence``; and its ``recurrence`` reads only ``h_prev``, ``u`` and the cell's own parameters and buffers.
A broken promise gives a raw shape error in one mode only, or, worse, silently wrong or missing gradients in the
parallel mode. These checks evaluate the recurrence on a slice of the first solves (the first
:data:`SLICE_ROWS` batch rows, up to :data:`SLICE_STEPS` steps) and raise a ``ValueError`` naming the fix. Each runs
once per cell instance, on the first solve it applies to (the batching and determinism check again at the first
solve in training mode, where dropout acts, when it ran in eval mode). A promise broken later (a zero-initialised
coupling that training makes nonzero) is caught by :func:`check_adjoint`, which every parallel backward runs;
``ParaCell(check_contract=False)`` switches them all off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .checks import named_weights, traced
from .structure import Block, Structure

if TYPE_CHECKING:
    from .cell import ParaCell

#: steps of the first batch rows on which the checks evaluate the recurrence
SLICE_STEPS = 4
#: batch rows on which they evaluate it (a solve of one sequence adds a second: its steps in reverse order)
SLICE_ROWS = 2
#: the checks a new cell has pending: ``"declaration"`` (structure, state, output shape; every mode),
#: ``"jacobian"`` (the parallel mode), ``"inputs"`` (the parallel and fused modes, with grad enabled) and
#: ``"train_mode"`` (the parallel mode's batching and determinism check, in training mode)
CHECKS = ("declaration", "jacobian", "inputs", "train_mode")
#: the checks that apply to each mode's solves
MODE_CHECKS = {
    "sequential": frozenset({"declaration"}),
    "parallel": frozenset(CHECKS),
    "fused": frozenset({"declaration", "inputs"}),
}
#: relative tolerance of the Jacobian check, in units of the solve dtype's machine epsilon
EPS_FACTOR = 2**10
#: tolerance of the backward's self-check (:func:`check_adjoint`) relative to the adjoint's size, in units of the
#: solve dtype's machine epsilon
ADJOINT_EPS_FACTOR = 2**12
_OFF = "pass check_contract=False to the cell to skip these checks"


def check_contract(cell: ParaCell, mode: str, u: Tensor, h0: Tensor, pending: set[str]) -> None:
    """Run the checks of ``pending`` that apply to ``mode`` and the grad mode; remove those done from ``pending``.

    Args:
        cell: the cell about to solve.
        mode: the resolved mode (``"sequential"``, ``"parallel"`` or ``"fused"``).
        u: ``(B, T, *U)`` projected inputs of the solve.
        h0: ``(B, *S)`` initial state, in the solve dtype.
        pending: the cell's checks still to run (a subset of :data:`CHECKS`), updated in place.
    """
    if traced(u) or u.shape[0] == 0 or u.shape[1] == 0:
        return
    due = set(pending & MODE_CHECKS[mode])
    inference = torch.is_inference_mode_enabled()
    if inference or not torch.is_grad_enabled():
        due.discard("inputs")  # no gradient to lose
    if not cell.training:
        due.discard("train_mode")  # dropout acts in training mode only
    if inference and _has_own_jacobian(cell):
        # only forward mode differentiates here, and the first torch.func.jvp of a process imports torch._dynamo
        # (seconds): a cell with a hand-written jacobian is checked at a call outside inference mode
        due.discard("jacobian")
    if not due:
        return
    if "declaration" in due:
        check_declaration(cell)
    u_s, h0_s = _rows(u, h0)
    cuda = [u.device.index if u.device.index is not None else torch.cuda.current_device()] if u.is_cuda else []
    # fork_rng: a recurrence that samples leaves the caller's random streams as they were; identity saved-tensor
    # hooks: the graphs built here are not counted by an enclosing checkpoint (torch.utils.checkpoint with
    # use_reentrant=False), whose recomputation finds the checks done
    with torch.random.fork_rng(cuda), torch.autograd.graph.saved_tensors_hooks(_same, _same):
        with torch.no_grad():  # the recurrence in the parallel layout only for the checks that read it
            h_prev, f, h = _slice(cell, u_s, h0_s, batched=bool(due & {"jacobian", "train_mode"}))
        pending.discard("declaration")
        if due & {"jacobian", "train_mode"}:
            check_batched(cell, h_prev, u_s, f, h)
            if cell.training:
                pending.discard("train_mode")
        if "jacobian" in due:
            check_jacobian(cell, h_prev, u_s, f, h)
            pending.discard("jacobian")
        if "inputs" in due and check_inputs(cell, h_prev, u_s, mode):
            pending.discard("inputs")


def check_declaration(cell: ParaCell) -> None:
    """The cell's :attr:`structure` is a :class:`Structure` instance that fits :attr:`state_shape`."""
    name, s = type(cell).__name__, cell.structure
    if isinstance(s, type) and issubclass(s, Structure):
        example = "Block(2)" if issubclass(s, Block) else f"{s.__name__}()"
        raise ValueError(f"{name}.structure is the class {s.__name__}; it must be an instance: structure = {example}")
    if not isinstance(s, Structure):
        raise ValueError(
            f"{name}.structure must be a Structure instance (Diagonal(), Block(k) or Dense() from pararnn_ts.core), "
            f"got {s!r}"
        )
    shape = cell.state_shape
    if not (isinstance(shape, tuple) and shape and all(isinstance(d, int) and d >= 1 for d in shape)):
        raise ValueError(
            f"{name}.state_shape must be a tuple of positive ints, the shape of one state without the batch "
            f"dimension ((D,) or (D, k)), got {shape!r}"
        )
    if not s.accepts_state(shape):
        fit = (
            f"Block({shape[-1]})"
            if len(shape) == 2
            else "Diagonal() (elementwise) or Dense() (entries mix)"
            if len(shape) == 1
            else "a state of shape (D,) or (D, k)"
        )
        raise ValueError(
            f"{name}: structure {s} is for a state of shape {s.state_layout}, but state_shape is {shape}; declare "
            f"the structure that fits the state ({fit}) or change state_shape"
        )


def check_batched(cell: ParaCell, h_prev: Tensor, u: Tensor, f: Tensor, h: Tensor) -> None:
    """The parallel mode's layout, at ``h_prev`` ``(R, n, *S)``, ``u`` ``(R, n, *U)`` (``R ≥ 2`` rows).

    ``f = recurrence(h_prev, u)`` (all steps at once) equals ``h``, the same steps one by one (batched over time,
    deterministic), and its first row equals the recurrence of that row alone (no batch row reads another).
    """
    name = type(cell).__name__
    tol = EPS_FACTOR * torch.finfo(f.dtype).eps
    if (err := _relative(f - h, h)) > tol:
        raise ValueError(
            f"{name}.recurrence gives other values on h_prev of shape {tuple(h_prev.shape)} (the (batch, time, ...) "
            f"layout the parallel mode calls it with) than step by step on (batch, ...) (relative difference "
            f"{err:.3g}, tolerance {tol:.2g}{', in training mode' if cell.training else ''}): for the parallel mode "
            "it must be batched over any leading dims (index from the end: u[..., 0], not u[:, 0]) and deterministic "
            f'(no dropout or sampling inside it); or use mode="sequential" ({_OFF})'
        )
    with torch.no_grad():
        alone = cell.recurrence(h_prev[:1], u[:1])
    if (err := _relative(alone - f[:1], f[:1])) > tol:
        raise ValueError(
            f"{name}.recurrence mixes batch rows: the first row of h_prev of shape {tuple(h_prev.shape)} gives other "
            f"values alone than with the other rows (relative difference {err:.3g}, tolerance {tol:.2g}): for the "
            "parallel mode each row of its result must depend on that row of h_prev and u only (no mean, sum or "
            f'normalisation over the batch dim 0); or use mode="sequential" ({_OFF})'
        )


def check_jacobian(cell: ParaCell, h_prev: Tensor, u: Tensor, f: Tensor, h: Tensor) -> None:
    """``cell.jacobian(h_prev, u)`` is ``(f, ∂f/∂h_prev)`` in the structure's layout, at ``h_prev`` ``(R, n, *S)``,
    ``u`` ``(R, n, *U)``, where ``f = recurrence(h_prev, u)`` equals ``h``, the same steps one by one."""
    name, s = type(cell).__name__, cell.structure
    tol = EPS_FACTOR * torch.finfo(f.dtype).eps
    own = _has_own_jacobian(cell)
    source = f"{name}.jacobian" if own else f"the declared structure {s} (by forward-mode AD)"
    with torch.no_grad():
        f_j, J = cell.jacobian(h_prev, u)
    expected = (*h_prev.shape[: -len(cell.state_shape)], *s.jacobian_shape(cell.state_shape))
    if tuple(f_j.shape) != tuple(f.shape) or tuple(J.shape) != expected:
        raise ValueError(
            f"{name}.jacobian returned f of shape {tuple(f_j.shape)} and J of shape {tuple(J.shape)} for h_prev of "
            f"shape {tuple(h_prev.shape)}; structure {s} needs f of h_prev's shape and J of shape {expected}: fix "
            "jacobian (or delete it to get the structure's Jacobian by forward-mode AD)"
        )
    f_err = _relative(f_j - f, f)
    if f_err > tol:
        raise ValueError(
            f"{name}.jacobian returns an f that differs from recurrence(h_prev, u) by {f_err:.3g} (relative, tolerance "
            f"{tol:.2g}): its first output must be recurrence(h_prev, u); fix jacobian (or delete it to get the "
            "Jacobian by forward-mode AD)"
        )
    pair = _directional(cell, h_prev, u, J)
    if pair is None:  # no derivative of recurrence to compare with: nothing to check
        return
    declared, true, what, size = pair
    err = ((declared - true).abs().amax() / size).item()
    if err > tol:
        if own:
            fix = (
                f"correct {name}.jacobian (or delete it: forward-mode AD then computes the Jacobian), and check "
                f"that {s} is the structure recurrence has"
            )
        else:
            fix = (
                f"recurrence mixes state entries that {s} keeps apart; declare the structure it has: Dense() for a "
                "full N×N Jacobian, Block(k) when only the k entries of each channel mix"
            )
            if len(cell.state_shape) == 2:  # Dense() lays the state out flat
                d, k = cell.state_shape
                fix += f" (Dense() takes a flat state: state_shape ({d * k},), with recurrence reading it so)"
        raise ValueError(
            f"{name}: the Jacobian from {source} is not the derivative of recurrence: {what} differ by {err:.3g} "
            f"(relative to their size; tolerance {tol:.2g}) on the first {h_prev.shape[1]} steps of "
            f"{h_prev.shape[0]} sequences, so the parallel mode's Newton solve and its backward would use a wrong "
            f'Jacobian (wrong gradients, silently). Fix: {fix}; or use mode="sequential" ({_OFF})'
        )


def check_adjoint(cell: ParaCell, vjp: Tensor | None, adjoint: Tensor, grad_h: Tensor) -> None:
    """The parallel backward's self-check, at the cost of one reduction and one host sync.

    The adjoint ``λ`` ``(B, T, *S)`` that the reverse scan solved with the declared Jacobian ``J`` satisfies
    ``λ_{t-1} − g_{t-1} = J_tᵀ λ_t`` (``g`` = ``grad_h``); ``vjp`` ``(B, T, *S)`` is autograd's ``(∂f/∂h_{t-1})ᵀ λ_t``
    of the recurrence (``None``: it does not read ``h_prev``), the same product with the true derivative. They differ
    when the recurrence no longer has its declared structure (a coupling that was zero at the first-use checks),
    is not deterministic (dropout in training mode) or mixes batch rows: the gradients would be silently wrong, so
    this raises a ``ValueError`` naming the fix. The tolerance is relative to ``max(‖λ‖_∞, ‖g‖_∞)``; a NaN gradient
    is left to the caller.
    """
    if adjoint.shape[1] < 2 or adjoint.numel() == 0 or traced(adjoint):
        return
    diff = grad_h[:, :-1] - adjoint[:, :-1]
    if vjp is not None:
        diff += vjp[:, 1:]
    # aminmax: one pass, no |x| in memory (5× cheaper than vector_norm(x, inf) on CPU); NaN propagates
    extremes = torch.stack([m for x in (diff, adjoint, grad_h) for m in torch.aminmax(x)]).abs().view(3, 2).amax(1)
    err, *sizes = extremes.tolist()
    size = max(sizes)
    tol = ADJOINT_EPS_FACTOR * torch.finfo(adjoint.dtype).eps
    if not err > tol * size:  # also for a NaN
        return
    name, s = type(cell).__name__, cell.structure
    declared = f"{name}.jacobian" if _has_own_jacobian(cell) else f"the declared structure {s}"
    raise ValueError(
        f"{name}: the parallel backward found that the derivative of recurrence in h_prev is not the Jacobian of "
        f"{declared} it solved the adjoint with: (∂f/∂h)ᵀ·λ by autograd and Jᵀ·λ differ by {err / size:.3g} "
        f"(relative to the adjoint's size; tolerance {tol:.2g}), so the gradients would be silently wrong. The "
        "derivative in h does not have the declared structure (e.g. a coupling between state entries that was zero "
        "at the first solve and that training made nonzero), recurrence is not deterministic (dropout or sampling "
        "inside it), or it mixes batch rows. Fix: declare the structure it has (Dense() for a full N×N Jacobian, "
        "Block(k) when only the k entries of each channel mix) or correct a hand-written jacobian; make recurrence "
        f'deterministic and batched over the leading dims; or use mode="sequential" ({_OFF})'
    )


def check_inputs(cell: ParaCell, h_prev: Tensor, u: Tensor, mode: str) -> bool:
    """``recurrence`` reads no tensor requiring grad other than the cell's parameters (and ``h_prev``, ``u``).

    Evaluates ``recurrence(h_prev, u)`` on detached ``h_prev``, ``u`` with grad enabled and walks its autograd
    graph to the leaves. ``False`` when nothing required grad, so the check could not tell (it runs again).
    """
    out = cell.recurrence(h_prev, u)
    if out.grad_fn is None:
        return False
    weights = named_weights(cell).values()  # a DataParallel replica's copies too
    params = {id(p) for p in weights}
    # a parameter computed from others (torch.func.functional_call(cell, {"A": A - lr * grad}, ...)) is one too
    computed = {p.grad_fn for p in weights if p.grad_fn is not None}
    hidden = [leaf for leaf in _leaves(out, stop=computed) if id(leaf) not in params]
    if hidden:
        name = type(cell).__name__
        attrs = [
            key
            for key, value in vars(cell).items()
            if isinstance(value, Tensor) and value.requires_grad and id(value) not in params
        ]
        what = (
            "the attribute " + ", ".join(f"self.{a}" for a in attrs)
            if attrs
            else "a tensor of shape " + ", ".join(str(tuple(leaf.shape)) for leaf in hidden)
        )
        raise ValueError(
            f"{name}.recurrence reads {what}, which requires grad but is neither h_prev, u nor a parameter of the "
            f'cell: in mode="{mode}" its gradient would be silently lost (that backward differentiates only u, '
            "the initial state and the cell's parameters). Everything recurrence reads must be h_prev, u or the "
            "cell's parameters and buffers: pass it through u (compute it in project(), or feed it in x), register "
            f'it as an nn.Parameter of the cell, or use mode="sequential" (autograd through the loop)'
        )
    return True


def _rows(u: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """The slice the checks run on: ``u`` ``(R, n, *U)`` and ``h0`` ``(R, *S)`` (detached copies in ``h0``'s dtype),
    with ``R =`` :data:`SLICE_ROWS` rows, ``n ≤`` :data:`SLICE_STEPS` steps; a single sequence is paired with its
    first steps in reverse order (any inputs do: a batched recurrence computes each row on its own)."""
    n = min(SLICE_STEPS, u.shape[1])
    u_s, h0_s = u[:SLICE_ROWS, :n].detach().to(h0.dtype, copy=True), h0[:SLICE_ROWS].detach()
    if u_s.shape[0] < SLICE_ROWS:
        u_s, h0_s = torch.cat([u_s, u_s.flip(1)]), torch.cat([h0_s, h0_s])
    return u_s, h0_s


def _slice(cell: ParaCell, u: Tensor, h0: Tensor, batched: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """``(h_prev, f, h)``: the states before and after each of the ``n`` steps of ``u`` ``(R, n, *U)`` from ``h0``
    ``(R, *S)`` by the loop, and ``f = recurrence(h_prev, u)`` in the parallel layout (``None`` unless ``batched``);
    checks each one's shape and dtype."""
    name = type(cell).__name__
    states = [h0]
    for t in range(u.shape[1]):
        out = _first_step(cell, states[-1], u[:, t]) if t == 0 else cell.recurrence(states[-1], u[:, t])
        check_state(name, out, states[-1], u[:, t])
        states.append(out)
    h_prev, h = torch.stack(states[:-1], dim=1), torch.stack(states[1:], dim=1)
    if not batched:  # the loop's checks only: a sequential solve calls the recurrence step by step
        return h_prev, None, h
    try:
        f = cell.recurrence(h_prev, u)
    except (RuntimeError, IndexError, ValueError) as err:
        raise ValueError(
            f"{name}.recurrence failed on h_prev of shape {tuple(h_prev.shape)} and u of shape {tuple(u.shape)}, "
            "the (batch, time, ...) layout the parallel mode calls it with; it must be batched over any leading "
            "dims: index from the end (u[..., 0], not u[:, 0]) and broadcast parameters over the leading dims "
            f"({_OFF}). The error: {err}"
        ) from err
    check_state(name, f, h_prev, u)
    return h_prev, f, h


def _first_step(cell: ParaCell, h_prev: Tensor, u: Tensor) -> Tensor:
    """``recurrence(h_prev, u)`` of one step; where it fails, the cell has no :meth:`~ParaCell.project` of its own
    and ``u`` is not of the state's shape, a ``ValueError`` saying that ``u`` is then ``x`` itself."""
    from .cell import ParaCell

    try:
        return cell.recurrence(h_prev, u)
    except (RuntimeError, IndexError, ValueError) as err:
        if type(cell).project is not ParaCell.project or u.shape[1:] == h_prev.shape[1:]:
            raise
        name = type(cell).__name__
        raise ValueError(
            f"{name}.recurrence failed on h_prev of shape {tuple(h_prev.shape)} and u of shape {tuple(u.shape)}: "
            f"{name} has no project(x), so u is x itself (its last dim input_size={u.shape[-1]}); define project(x) "
            f"→ u, the time-parallel input map that gives recurrence what it reads (e.g. nn.Linear(input_size, "
            f"hidden_size) applied to x). The error: {err}"
        ) from err


def check_state(name: str, out: Tensor, h_prev: Tensor, u: Tensor) -> None:
    """What the recurrence of cell class ``name`` returned for ``h_prev``, ``u`` is a state: a tensor of ``h_prev``'s
    shape and dtype (a shape and dtype comparison: no data read)."""
    if not isinstance(out, Tensor) or out.shape != h_prev.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"{name}.recurrence returned {got} for h_prev of shape {tuple(h_prev.shape)} and u of shape "
            f"{tuple(u.shape)}; it must return the next state, a tensor of h_prev's shape (the leading dims, then "
            "state_shape)"
        )
    if out.dtype != h_prev.dtype:
        raise ValueError(
            f"{name}.recurrence returned {out.dtype} for a {h_prev.dtype} state; it must return the state's dtype: "
            f"convert the cell's parameters and buffers (cell.to({h_prev.dtype})) or cast what it computes with "
            "(.to(h_prev.dtype))"
        )


def _directional(cell: ParaCell, h: Tensor, u: Tensor, J: Tensor) -> tuple[Tensor, Tensor, str, float] | None:
    """``(declared, true, what, size)`` for a random ``v``: ``Jᵀ v`` and reverse mode's ``(∂f/∂h)ᵀ v`` (what the
    backward takes), or under inference mode, or where the recurrence has no reverse-mode derivative, ``J v`` and
    forward mode's ``∂f/∂h v``; ``size`` is the scale their rounding errors grow with. ``None``: neither could run.

    Reverse mode first: autograd is loaded anyway, while the first ``torch.func.jvp`` of a process imports
    ``torch._dynamo`` (over a second; a cell without a hand-written :meth:`jacobian` pays it in its solves anyway).
    """
    s = cell.structure
    generator = torch.Generator().manual_seed(0)  # the global RNG stays untouched
    v = torch.randn(h.shape, generator=generator, dtype=h.dtype).to(h.device)
    if not torch.is_inference_mode_enabled():
        try:
            with torch.enable_grad():
                x = h.detach().requires_grad_()
                # a scalar, not grad_outputs=v: a tensor there makes autograd import sympy (a third of a second)
                (true,) = torch.autograd.grad((cell.recurrence(x, u) * v).sum(), x, allow_unused=True)
        except (RuntimeError, NotImplementedError):
            pass
        else:
            true = torch.zeros_like(h) if true is None else true
            J = s.transpose(J)
            return _pair(s, J, v, true, "Jᵀ·v and the reverse-mode derivative (∂f/∂h)ᵀ·v")
    try:
        with torch.no_grad():
            _, true = torch.func.jvp(lambda x: cell.recurrence(x, u), (h,), (v,))
    except (RuntimeError, NotImplementedError):
        return None
    return _pair(s, J, v, true, "J·v and the forward-mode derivative ∂f/∂h·v")


def _pair(s: Structure, J: Tensor, v: Tensor, true: Tensor, what: str) -> tuple[Tensor, Tensor, str, float]:
    # |J|·|v| bounds the terms each entry sums, so their rounding errors; at least 1 (the scale of a state).
    size = max(1.0, s.apply(J.abs(), v.abs()).amax().item(), true.abs().amax().item())
    return s.apply(J, v), true, what, size


def _relative(diff: Tensor, ref: Tensor) -> float:
    return (diff.abs().amax() / ref.abs().amax().clamp_min(1)).item()


def _leaves(out: Tensor, stop: set[object] | frozenset[object] = frozenset()) -> list[Tensor]:
    """The leaf tensors requiring grad that ``out``'s autograd graph reaches without passing a node of ``stop``."""
    leaves, seen, stack = [], set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in stop:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor):
            leaves.append(variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves


def _same(t: Tensor) -> Tensor:
    return t


def _has_own_jacobian(cell: ParaCell) -> bool:
    """Whether the cell's class has a hand-written :meth:`jacobian` (not the base class's forward-mode AD)."""
    from .cell import ParaCell

    return type(cell).jacobian is not ParaCell.jacobian
