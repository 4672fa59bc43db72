"""Triton kernels: fused Newton solves of ParaGRU / ParaLSTM, their adjoint backward, linear scans.

Imported only when a Triton op runs (it imports ``triton`` at the top). Every kernel works on
tiles ``[CHUNK_T, BLOCK_D]`` (time × channels) of one batch row, one program per
``(batch, channel block)``, walking time chunk by chunk with the exact state carried between
chunks. Inside a tile:

* ``h_{t-1}`` (the state shifted by one step) comes from ``tl.gather`` along the time axis, in
  registers / shared memory, never through global memory;
* linear recurrences ``x_i = a_i x_{i-1} + b_i`` along the time axis are solved either by
  ``tl.associative_scan`` (``TL_SCAN=True``, the GPU default) or by ``LOG2_T`` doubling steps
  built on ``tl.gather`` (``TL_SCAN=False``: the CPU interpreter runs a custom-combine
  ``tl.associative_scan`` one element at a time, the doubling scan is vectorised);
* chunks are walked with ``while`` loops (a ``range`` over a runtime bound breaks the
  interpreter under NumPy >= 2.4);
* only forward scans are used: backward kernels (and reverse scans) lay the tile out with time
  running backwards (row ``i`` is step ``t = end - 1 - i``) instead of ``reverse=True``, whose
  results with non-commutative combines are disputed (triton-lang/triton#4362, open).

Layouts (all contiguous): GRU state ``(B, T, D)``; LSTM state ``(B, T, D, 2)`` with ``[c, h]``
last; ``u`` ``(B, T, 3, D)``; ``A`` ``(3, D)``; ``C`` ``(2, D)``.
"""

from __future__ import annotations

import triton
import triton.language as tl

INF = tl.constexpr(float("inf"))
#: elements per step of the loop that sums a weight row's squares for in-kernel norm clipping
NORM_BLOCK = tl.constexpr(512)


# ---- elementwise maths --------------------------------------------------------------------------
@triton.jit
def _tanh(x):
    # exp-based (libdevice is not available in the interpreter); absolute error ~ 1 ulp of 1.
    e = tl.exp(-2.0 * tl.abs(x))
    y = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -y, y)


@triton.jit
def _tanh_approx(x):
    # the GPU's one-instruction tanh (PTX tanh.approx.f32, relative error ~2^-11); no interpreter twin
    return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _tanh_of(x, FAST: tl.constexpr):
    """``tanh``: exact to ~1 ulp of 1, or (``FAST``) the GPU's approximate instruction."""
    if FAST:
        return _tanh_approx(x)
    else:
        return _tanh(x)


@triton.jit
def _sigmoid_of(x, FAST: tl.constexpr):
    """``σ(x)``; ``FAST``: ``(1 + tanh(x/2)) / 2`` with the GPU's approximate ``tanh``."""
    if FAST:
        return 0.5 + 0.5 * _tanh_approx(0.5 * x)
    else:
        return tl.sigmoid(x)


@triton.jit
def _gru_gates(h, uz, ur, uc, az, ar, ac, FAST: tl.constexpr = False):
    z = _sigmoid_of(az * h + uz, FAST)
    r = _sigmoid_of(ar * h + ur, FAST)
    c = _tanh_of(ac * (h * r) + uc, FAST)
    return z, r, c


@triton.jit
def _gru_step(h, uz, ur, uc, az, ar, ac):
    """``(f(h, u), ∂f/∂h)`` of ParaGRU."""
    z, r, c = _gru_gates(h, uz, ur, uc, az, ar, ac)
    dz = z * (1.0 - z) * az
    dr = r * (1.0 - r) * ar
    dc = (1.0 - c * c) * ac * (r + h * dr)
    return h + z * (c - h), (1.0 - z) + dz * (c - h) + z * dc


@triton.jit
def _lstm_gates(c, h, uf, uz, uo, af, az, ao, pf, po, FAST: tl.constexpr = False):
    f = _sigmoid_of(af * h + uf + pf * c, FAST)
    z = _tanh_of(az * h + uz, FAST)
    cn = f * c + (1.0 - f) * z
    o = _sigmoid_of(ao * h + uo + po * cn, FAST)
    return f, z, cn, o, _tanh_of(cn, FAST)


@triton.jit
def _lstm_linearised(c, h, uf, uz, uo, af, az, ao, pf, po):
    """``(f, z, c', o, tanh c', σ'_f, σ'_o, J00, J01, J10, J11)`` of ParaLSTM, ``J = ∂[c'; h'] / ∂[c; h]``."""
    f, z, cn, o, tc = _lstm_gates(c, h, uf, uz, uo, af, az, ao, pf, po)
    df = f * (1.0 - f)
    dcc = f + df * pf * (c - z)
    dch = df * af * (c - z) + (1.0 - f) * (1.0 - z * z) * az
    do = o * (1.0 - o)
    dh_dcn = do * po * tc + o * (1.0 - tc * tc)
    return f, z, cn, o, tc, df, do, dcc, dch, dh_dcn * dcc, do * ao * tc + dh_dcn * dch


@triton.jit
def _lstm_step(c, h, uf, uz, uo, af, az, ao, pf, po):
    """``(c', h', J00, J01, J10, J11)`` of ParaLSTM."""
    _, _, cn, o, tc, _, _, j00, j01, j10, j11 = _lstm_linearised(c, h, uf, uz, uo, af, az, ao, pf, po)
    return cn, o * tc, j00, j01, j10, j11


@triton.jit
def _gru_linearised(hp, uz, ur, uc, az, ar, ac):
    """``(z, r, c, J)`` of the step from ``hp``: the gates and ``J = ∂f/∂h`` (for the adjoint passes)."""
    z, r, c = _gru_gates(hp, uz, ur, uc, az, ar, ac)
    dr = r * (1.0 - r) * ar
    J = (1.0 - z) + z * (1.0 - z) * az * (c - hp) + z * (1.0 - c * c) * ac * (r + hp * dr)
    return z, r, c, J


@triton.jit
def _gru_gate_grads(lam, hp, z, r, c, ac):
    """``∂L/∂u`` of a ParaGRU step, ``(gz, gr, gc)``, from its adjoint ``λ`` and its gates."""
    gz = lam * (c - hp) * z * (1.0 - z)
    gc = lam * z * (1.0 - c * c)
    gr = gc * ac * hp * r * (1.0 - r)
    return gz, gr, gc


@triton.jit
def _lstm_gate_grads(lam_c, lam_h, cp, f, z, o, tc, df, do, po):
    """``∂L/∂u`` of a ParaLSTM step, ``(pre_f, pre_z, pre_o)``, from its adjoint ``(λ_c, λ_h)``, the
    previous cell state ``cp`` and the outputs of :func:`_lstm_linearised`."""
    pre_o = lam_h * tc * do
    g_cn = lam_c + lam_h * o * (1.0 - tc * tc) + pre_o * po
    pre_f = g_cn * (cp - z) * df
    pre_z = g_cn * (1.0 - f) * (1.0 - z * z)
    return pre_f, pre_z, pre_o


# ---- tile helpers -------------------------------------------------------------------------------
@triton.jit
def _shift(x, first, rows):
    """Row ``i`` of the result is row ``i - 1`` of ``x`` ``[CHUNK_T, BLOCK_D]``; row 0 is ``first`` ``[BLOCK_D]``."""
    return tl.where(rows == 0, first[None, :], tl.gather(x, tl.maximum(rows - 1, 0), 0))


@triton.jit
def _row(x, rows, i):
    """Row ``i`` (a scalar) of ``x`` ``[CHUNK_T, BLOCK_D]`` as ``[BLOCK_D]`` (exact: a sum of zeros and one value)."""
    return tl.sum(tl.where(rows == i, x, 0.0), axis=0)


@triton.jit
def _diag_combine(a1, b1, a2, b2):
    return a2 * a1, a2 * b1 + b2


@triton.jit
def _block_combine(p00, p01, p10, p11, v0, v1, q00, q01, q10, q11, w0, w1):
    # (P, v) then (Q, w): x -> Q (P x + v) + w
    return (
        q00 * p00 + q01 * p10,
        q00 * p01 + q01 * p11,
        q10 * p00 + q11 * p10,
        q10 * p01 + q11 * p11,
        q00 * v0 + q01 * v1 + w0,
        q10 * v0 + q11 * v1 + w1,
    )


@triton.jit
def _diag_scan(a, b, rows, LOG2_T: tl.constexpr, TL_SCAN: tl.constexpr):
    """``x_i = a_i x_{i-1} + b_i`` along axis 0 of ``[CHUNK_T, BLOCK_D]`` tiles, ``x_{-1} = 0``."""
    if TL_SCAN:
        _, x = tl.associative_scan((a, b), 0, _diag_combine)
    else:
        for k in tl.static_range(LOG2_T):
            prev = tl.maximum(rows - (1 << k), 0)
            has_prev = rows >= (1 << k)
            a_p = tl.gather(a, prev, 0)
            b_p = tl.gather(b, prev, 0)
            b = tl.where(has_prev, a * b_p + b, b)
            a = tl.where(has_prev, a * a_p, a)
        x = b
    return x


@triton.jit
def _block_scan(a00, a01, a10, a11, b0, b1, rows, LOG2_T: tl.constexpr, TL_SCAN: tl.constexpr):
    """``x_i = A_i x_{i-1} + b_i`` with per-channel 2×2 ``A_i``, ``x_{-1} = 0``; returns ``(x0, x1)``."""
    if TL_SCAN:
        _, _, _, _, x0, x1 = tl.associative_scan((a00, a01, a10, a11, b0, b1), 0, _block_combine)
    else:
        for k in tl.static_range(LOG2_T):
            prev = tl.maximum(rows - (1 << k), 0)
            has_prev = rows >= (1 << k)
            n00, n01, n10, n11, n0, n1 = _block_combine(
                tl.gather(a00, prev, 0),
                tl.gather(a01, prev, 0),
                tl.gather(a10, prev, 0),
                tl.gather(a11, prev, 0),
                tl.gather(b0, prev, 0),
                tl.gather(b1, prev, 0),
                a00,
                a01,
                a10,
                a11,
                b0,
                b1,
            )
            a00 = tl.where(has_prev, n00, a00)
            a01 = tl.where(has_prev, n01, a01)
            a10 = tl.where(has_prev, n10, a10)
            a11 = tl.where(has_prev, n11, a11)
            b0 = tl.where(has_prev, n0, b0)
            b1 = tl.where(has_prev, n1, b1)
        x0 = b0
        x1 = b1
    return x0, x1


@triton.jit
def _abs_max(x):
    """``max|x|`` of a tile, NaN counted as +inf (GPU max reductions may drop NaN)."""
    return tl.max(tl.where(x == x, tl.abs(x), INF))


@triton.jit
def _worse(res, worst):
    """The worse of two residuals, NaN being the worst."""
    return tl.where((res > worst) | (res != res), res, worst)


# ---- program, chunk and I/O helpers shared by the kernels ---------------------------------------
@triton.jit
def _program_tile(D, CHUNK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """``(pid_b, pid_d, d, dmask, i, rows)``: this program's batch row and channel block, its channels ``d``
    ``[BLOCK_D]`` (``dmask = d < D``), tile rows ``i`` ``[CHUNK_T]`` and ``rows`` ``[CHUNK_T, BLOCK_D]``."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    i = tl.arange(0, CHUNK_T)
    rows = i[:, None] + tl.zeros([CHUNK_T, BLOCK_D], tl.int32)
    return pid_b, pid_d, d, dmask, i, rows


@triton.jit
def _forward_chunk(t0, i, T, pid_b, dmask):
    """``(mask, bt)`` of the forward tile of steps ``t = t0 + i``: ``t < T`` on valid channels, ``b·T + t`` (int64)."""
    t = t0 + i
    mask = (t < T)[:, None] & dmask[None, :]
    bt = pid_b.to(tl.int64) * T + t
    return mask, bt


@triton.jit
def _backward_chunk(t0, i, T, pid_b, dmask):
    """``(end, t, mask, bt)`` of the tile ending at ``end = T - t0``, time running backwards: ``t = end - 1 - i``."""
    end = T - t0
    t = end - 1 - i
    mask = (t >= 0)[:, None] & dmask[None, :]
    bt = pid_b.to(tl.int64) * T + t
    return end, t, mask, bt


@triton.jit
def _scan_chunk(t0, i, T, dmask, REVERSE: tl.constexpr):
    """``(t, mask)`` of the scan tile at ``t0`` (from the end when ``REVERSE``), ``mask``: ``0 <= t < T``."""
    t = t0 + i
    if REVERSE:
        t = T - 1 - t
    mask = ((t >= 0) & (t < T))[:, None] & dmask[None, :]
    return t, mask


@triton.jit
def _newton_counters():
    """Zeros for a Newton kernel's chunk loop: worst residual, most updates, first step ``t0``."""
    worst = tl.full([], 0.0, tl.float32)
    most = tl.full([], 0, tl.int32)
    t0 = tl.full([], 0, tl.int32)
    return worst, most, t0


@triton.jit
def _tally(res, n, worst, most):
    """The stats after a chunk whose Newton solve ended at residual ``res`` after ``n`` updates."""
    return _worse(res, worst), tl.maximum(most, n)


@triton.jit
def _store_stats(stats_ptr, pid_b, pid_d, worst, most):
    """``stats[pid] = (worst, most)`` for this program."""
    pid = pid_b * tl.num_programs(1) + pid_d
    tl.store(stats_ptr + 2 * pid, worst)
    tl.store(stats_ptr + 2 * pid + 1, most.to(tl.float32))


@triton.jit
def _load_rows2(ptr, D, d, dmask):
    """Rows 0, 1 of a ``(·, D)`` parameter at channels ``d``, each ``[1, BLOCK_D]``."""
    x0 = tl.load(ptr + d, mask=dmask, other=0.0)[None, :]
    x1 = tl.load(ptr + D + d, mask=dmask, other=0.0)[None, :]
    return x0, x1


@triton.jit
def _load_rows3(ptr, D, d, dmask):
    """Rows 0, 1, 2 of a ``(·, D)`` parameter at channels ``d``, each ``[1, BLOCK_D]``."""
    x0, x1 = _load_rows2(ptr, D, d, dmask)
    x2 = tl.load(ptr + 2 * D + d, mask=dmask, other=0.0)[None, :]
    return x0, x1, x2


@triton.jit
def _row_dot(x_ptr, y_ptr, D, NB, stride):
    """``x[0:D] · Σ_b y[b·stride : b·stride + D]`` (``b < NB``); ``‖x‖²`` when ``y_ptr`` is ``x_ptr`` and ``NB`` 1."""
    acc = tl.zeros([NORM_BLOCK], tl.float32)
    start = 0
    while start < D:
        k = start + tl.arange(0, NORM_BLOCK)
        acc += tl.load(x_ptr + k, mask=k < D, other=0.0) * _batch_sum(y_ptr, NB, stride, k, k < D)
        start += NORM_BLOCK
    return tl.sum(acc, 0)


@triton.jit
def _batch_sum(ptr, NB, stride, k, kmask):
    """``Σ_b ptr[b·stride + k]`` for ``b < NB``."""
    total = tl.zeros([NORM_BLOCK], tl.float32)
    b = 0
    while b < NB:
        total += tl.load(ptr + b * stride + k, mask=kmask, other=0.0)
        b += 1
    return total


@triton.jit
def _row_scale(ptr, D, max_norm):
    """``torch.renorm``'s factor for the row ``ptr[0:D]``: ``max_norm / (‖row‖ + 1e-7)`` if
    ``‖row‖ > max_norm``, else 1."""
    norm = tl.sqrt(_row_dot(ptr, ptr, D, 1, 0))
    return tl.where(norm > max_norm, max_norm / (norm + 1e-7), 1.0)


@triton.jit
def _clip_rows2(ptr, D, max_norm, x0, x1, CLIP: tl.constexpr):
    """``x0``, ``x1`` (rows 0, 1 of ``ptr`` at some channels) scaled as their whole rows' norm clip
    to ``max_norm`` would scale them; unchanged unless ``CLIP``."""
    if CLIP:
        x0 = x0 * _row_scale(ptr, D, max_norm)
        x1 = x1 * _row_scale(ptr + D, D, max_norm)
    return x0, x1


@triton.jit
def _clip_rows3(ptr, D, max_norm, x0, x1, x2, CLIP: tl.constexpr):
    """:func:`_clip_rows2` for rows 0, 1, 2."""
    x0, x1 = _clip_rows2(ptr, D, max_norm, x0, x1, CLIP)
    if CLIP:
        x2 = x2 * _row_scale(ptr + 2 * D, D, max_norm)
    return x0, x1, x2


@triton.jit
def _zeros2(BLOCK_D: tl.constexpr):
    """Two zeroed ``[BLOCK_D]`` float32 accumulators."""
    return tl.zeros([BLOCK_D], tl.float32), tl.zeros([BLOCK_D], tl.float32)


@triton.jit
def _zeros3(BLOCK_D: tl.constexpr):
    """Three zeroed ``[BLOCK_D]`` float32 accumulators."""
    return tl.zeros([BLOCK_D], tl.float32), tl.zeros([BLOCK_D], tl.float32), tl.zeros([BLOCK_D], tl.float32)


@triton.jit
def _store_rows2(ptr, D, d, dmask, x0, x1):
    """Rows 0, 1 of a ``(·, D)`` output at channels ``d``."""
    tl.store(ptr + d, x0, mask=dmask)
    tl.store(ptr + D + d, x1, mask=dmask)


@triton.jit
def _store_rows3(ptr, D, d, dmask, x0, x1, x2):
    """Rows 0, 1, 2 of a ``(·, D)`` output at channels ``d``."""
    _store_rows2(ptr, D, d, dmask, x0, x1)
    tl.store(ptr + 2 * D + d, x2, mask=dmask)


@triton.jit
def _load_pair(ptr, pid_b, D, d, dmask):
    """Both components of the interleaved ``(B, D, 2)`` state of batch row ``pid_b`` at channels ``d``."""
    x0 = tl.load(ptr + (pid_b * D + d) * 2, mask=dmask, other=0.0)
    x1 = tl.load(ptr + (pid_b * D + d) * 2 + 1, mask=dmask, other=0.0)
    return x0, x1


@triton.jit
def _load_gates(u_ptr, u_off, D, mask):
    """The 3 gate tiles of ``u`` ``(B, T, 3, D)`` in float32; ``u_off``: the offsets of gate 0."""
    u0 = tl.load(u_ptr + u_off, mask=mask, other=0.0).to(tl.float32)
    u1 = tl.load(u_ptr + u_off + D, mask=mask, other=0.0).to(tl.float32)
    u2 = tl.load(u_ptr + u_off + 2 * D, mask=mask, other=0.0).to(tl.float32)
    return u0, u1, u2


@triton.jit
def _store_gates(ptr, u_off, D, mask, x0, x1, x2):
    """The 3 gate tiles of a ``(B, T, 3, D)`` output at the gate-0 offsets ``u_off``."""
    tl.store(ptr + u_off, x0, mask=mask)
    tl.store(ptr + u_off + D, x1, mask=mask)
    tl.store(ptr + u_off + 2 * D, x2, mask=mask)


@triton.jit
def _state_before(x, x_edge, x0, rows, nxt, first, CHUNK_T: tl.constexpr):
    """The state before each row's step in a backward tile ``x`` (time running down): the next row ``nxt``,
    ``x_edge`` on the last row and ``x0`` where the step is 0 (``first``)."""
    xp = tl.where(rows == CHUNK_T - 1, x_edge[None, :], tl.gather(x, nxt, 0))
    return tl.where(first, x0[None, :], xp)


# ---- ParaGRU ------------------------------------------------------------------------------------
@triton.jit
def _gru_residual(h, carry, rows, mask, uz, ur, uc, az, ar, ac):
    """``(J, r, res)`` of the guess ``h``: ``J = ∂f/∂h``, ``r = f(h_{t-1}) - h`` (0 off ``mask``) and
    ``res = max|r| / max(max|h|, 1)``."""
    f_h, J = _gru_step(_shift(h, carry, rows), uz, ur, uc, az, ar, ac)
    r = tl.where(mask, f_h - h, 0.0)
    res = _abs_max(r) / tl.maximum(tl.max(tl.where(mask, tl.abs(h), 0.0)), 1.0)
    return J, r, res


@triton.jit
def gru_forward_kernel(
    u_ptr, a_ptr, h0_ptr, h_ptr, stats_ptr, T, D, tol, max_iters, max_norm,
    CHUNK_T: tl.constexpr, BLOCK_D: tl.constexpr, LOG2_T: tl.constexpr, TL_SCAN: tl.constexpr, CLIP: tl.constexpr,
):  # fmt: skip
    """Newton per chunk; writes ``h`` and ``stats[pid] = (worst residual, most updates)``. With ``CLIP``
    the rows of ``A`` are norm-clipped to ``max_norm`` first."""
    pid_b, pid_d, d, dmask, i, rows = _program_tile(D, CHUNK_T, BLOCK_D)
    az, ar, ac = _load_rows3(a_ptr, D, d, dmask)
    az, ar, ac = _clip_rows3(a_ptr, D, max_norm, az, ar, ac, CLIP)
    carry = tl.load(h0_ptr + pid_b * D + d, mask=dmask, other=0.0)
    worst, most, t0 = _newton_counters()
    while t0 < T:
        mask, bt = _forward_chunk(t0, i, T, pid_b, dmask)
        u_off = (3 * bt)[:, None] * D + d[None, :]
        uz, ur, uc = _load_gates(u_ptr, u_off, D, mask)
        h, _ = _gru_step(carry[None, :], uz, ur, uc, az, ar, ac)  # guess h_t = f(h_carry, u_t)
        J, r, res = _gru_residual(h, carry, rows, mask, uz, ur, uc, az, ar, ac)
        n = tl.full([], 0, tl.int32)
        while (res > tol) & (n < max_iters) & (res < INF):
            h = h + _diag_scan(J, r, rows, LOG2_T, TL_SCAN)
            J, r, res = _gru_residual(h, carry, rows, mask, uz, ur, uc, az, ar, ac)
            n += 1
        tl.store(h_ptr + bt[:, None] * D + d[None, :], h, mask=mask)
        carry = _row(h, rows, tl.minimum(T - t0, CHUNK_T) - 1)
        worst, most = _tally(res, n, worst, most)
        t0 += CHUNK_T
    _store_stats(stats_ptr, pid_b, pid_d, worst, most)


@triton.jit
def gru_backward_kernel(
    g_ptr, u_ptr, a_ptr, h0_ptr, h_ptr, gu_ptr, ga_ptr, gh0_ptr, T, D, max_norm,
    CHUNK_T: tl.constexpr, BLOCK_D: tl.constexpr, LOG2_T: tl.constexpr, TL_SCAN: tl.constexpr, CLIP: tl.constexpr,
):  # fmt: skip
    """Adjoint scan by chunks from the end; ``ga`` gets per-batch partial sums ``(B, 3, D)`` (with ``CLIP``:
    the gradient of the clipped rows, see :func:`clip_rows_backward_kernel`).

    With ``μ_t = J_tᵀ λ_t``: ``μ_t = J_tᵀ (g_t + μ_{t+1})`` (a scan whose transition is the row's
    own Jacobian) and ``λ_t = g_t + μ_{t+1}``; ``grad_h0 = μ_0``.
    """
    pid_b, _, d, dmask, i, rows = _program_tile(D, CHUNK_T, BLOCK_D)
    az, ar, ac = _load_rows3(a_ptr, D, d, dmask)
    az, ar, ac = _clip_rows3(a_ptr, D, max_norm, az, ar, ac, CLIP)
    h0 = tl.load(h0_ptr + pid_b * D + d, mask=dmask, other=0.0)
    mu = tl.zeros([BLOCK_D], tl.float32)
    acc_z, acc_r, acc_c = _zeros3(BLOCK_D)
    t0 = tl.full([], 0, tl.int32)
    while t0 < T:
        end, t, mask, bt = _backward_chunk(t0, i, T, pid_b, dmask)
        off = bt[:, None] * D + d[None, :]
        u_off = (3 * bt)[:, None] * D + d[None, :]
        h = tl.load(h_ptr + off, mask=mask, other=0.0)
        g = tl.load(g_ptr + off, mask=mask, other=0.0)
        uz, ur, uc = _load_gates(u_ptr, u_off, D, mask)
        # h_{t-1} is the next row; past the tile it is h[end - CHUNK_T - 1], or h0.
        # (The row index is clamped rather than masked: newer interpreters reject a scalar in a load mask.)
        t_edge = end - CHUNK_T - 1
        h_edge = tl.load(h_ptr + (pid_b.to(tl.int64) * T + tl.maximum(t_edge, 0)) * D + d, mask=dmask, other=0.0)
        h_edge = tl.where(t_edge >= 0, h_edge, h0)
        hp = _state_before(h, h_edge, h0, rows, tl.minimum(rows + 1, CHUNK_T - 1), (t == 0)[:, None], CHUNK_T)
        z, r, c, J = _gru_linearised(hp, uz, ur, uc, az, ar, ac)
        m = _diag_scan(J, J * (g + tl.where(rows == 0, mu[None, :], 0.0)), rows, LOG2_T, TL_SCAN)
        lam = tl.where(mask, g + _shift(m, mu, rows), 0.0)
        mu = _row(m, rows, tl.minimum(end, CHUNK_T) - 1)
        gz, gr, gc = _gru_gate_grads(lam, hp, z, r, c, ac)
        _store_gates(gu_ptr, u_off, D, mask, gz, gr, gc)
        acc_z += tl.sum(gz * hp, axis=0)
        acc_r += tl.sum(gr * hp, axis=0)
        acc_c += tl.sum(gc * hp * r, axis=0)
        t0 += CHUNK_T
    tl.store(gh0_ptr + pid_b * D + d, mu, mask=dmask)
    _store_rows3(ga_ptr + pid_b * 3 * D, D, d, dmask, acc_z, acc_r, acc_c)


# ---- ParaLSTM -----------------------------------------------------------------------------------
@triton.jit
def _lstm_residual(c, h, carry_c, carry_h, rows, mask, uf, uz, uo, af, az, ao, pf, po):
    """``(r_c, r_h, j00, j01, j10, j11, res)`` of the guess ``[c, h]``: residuals ``f(s_{t-1}) - s`` (0 off
    ``mask``), the Jacobian blocks and ``res = max|r| / max(max|s|, 1)``."""
    f_c, f_h, j00, j01, j10, j11 = _lstm_step(
        _shift(c, carry_c, rows), _shift(h, carry_h, rows), uf, uz, uo, af, az, ao, pf, po
    )
    r_c = tl.where(mask, f_c - c, 0.0)
    r_h = tl.where(mask, f_h - h, 0.0)
    scale = tl.maximum(tl.max(tl.where(mask, tl.maximum(tl.abs(c), tl.abs(h)), 0.0)), 1.0)
    res = tl.maximum(_abs_max(r_c), _abs_max(r_h)) / scale
    return r_c, r_h, j00, j01, j10, j11, res


@triton.jit
def lstm_forward_kernel(
    u_ptr, a_ptr, c_ptr, h0_ptr, h_ptr, stats_ptr, T, D, tol, max_iters, max_norm,
    CHUNK_T: tl.constexpr, BLOCK_D: tl.constexpr, LOG2_T: tl.constexpr, TL_SCAN: tl.constexpr, CLIP: tl.constexpr,
):  # fmt: skip
    """Newton per chunk on the state ``[c, h]``; writes ``h`` ``(B, T, D, 2)`` and the stats (``CLIP``: as
    :func:`gru_forward_kernel`, for the rows of ``A`` and ``C``)."""
    pid_b, pid_d, d, dmask, i, rows = _program_tile(D, CHUNK_T, BLOCK_D)
    kk = tl.arange(0, 2)[None, None, :]
    af, az, ao = _load_rows3(a_ptr, D, d, dmask)
    pf, po = _load_rows2(c_ptr, D, d, dmask)
    af, az, ao = _clip_rows3(a_ptr, D, max_norm, af, az, ao, CLIP)
    pf, po = _clip_rows2(c_ptr, D, max_norm, pf, po, CLIP)
    carry_c, carry_h = _load_pair(h0_ptr, pid_b, D, d, dmask)
    worst, most, t0 = _newton_counters()
    while t0 < T:
        mask, bt = _forward_chunk(t0, i, T, pid_b, dmask)
        u_off = (3 * bt)[:, None] * D + d[None, :]
        uf, uz, uo = _load_gates(u_ptr, u_off, D, mask)
        c, h, _, _, _, _ = _lstm_step(carry_c[None, :], carry_h[None, :], uf, uz, uo, af, az, ao, pf, po)
        r_c, r_h, j00, j01, j10, j11, res = _lstm_residual(
            c, h, carry_c, carry_h, rows, mask, uf, uz, uo, af, az, ao, pf, po
        )
        n = tl.full([], 0, tl.int32)
        while (res > tol) & (n < max_iters) & (res < INF):
            d_c, d_h = _block_scan(j00, j01, j10, j11, r_c, r_h, rows, LOG2_T, TL_SCAN)
            c = c + d_c
            h = h + d_h
            r_c, r_h, j00, j01, j10, j11, res = _lstm_residual(
                c, h, carry_c, carry_h, rows, mask, uf, uz, uo, af, az, ao, pf, po
            )
            n += 1
        off = (bt[:, None] * D + d[None, :])[:, :, None] * 2 + kk
        tl.store(h_ptr + off, tl.join(c, h), mask=mask[:, :, None] & (kk < 2))
        last = tl.minimum(T - t0, CHUNK_T) - 1
        carry_c = _row(c, rows, last)
        carry_h = _row(h, rows, last)
        worst, most = _tally(res, n, worst, most)
        t0 += CHUNK_T
    _store_stats(stats_ptr, pid_b, pid_d, worst, most)


@triton.jit
def lstm_backward_kernel(
    g_ptr, u_ptr, a_ptr, c_ptr, h0_ptr, h_ptr, gu_ptr, ga_ptr, gc_ptr, gh0_ptr, T, D, max_norm,
    CHUNK_T: tl.constexpr, BLOCK_D: tl.constexpr, LOG2_T: tl.constexpr, TL_SCAN: tl.constexpr, CLIP: tl.constexpr,
):  # fmt: skip
    """Adjoint scan by chunks from the end (see :func:`gru_backward_kernel`) with 2×2 blocks.

    ``ga`` ``(B, 3, D)`` and ``gc`` ``(B, 2, D)`` receive per-batch partial sums.
    """
    pid_b, _, d, dmask, i, rows = _program_tile(D, CHUNK_T, BLOCK_D)
    kk = tl.arange(0, 2)[None, None, :]
    af, az, ao = _load_rows3(a_ptr, D, d, dmask)
    pf, po = _load_rows2(c_ptr, D, d, dmask)
    af, az, ao = _clip_rows3(a_ptr, D, max_norm, af, az, ao, CLIP)
    pf, po = _clip_rows2(c_ptr, D, max_norm, pf, po, CLIP)
    c0, h0 = _load_pair(h0_ptr, pid_b, D, d, dmask)
    mu_c, mu_h = _zeros2(BLOCK_D)
    acc_f, acc_z, acc_o = _zeros3(BLOCK_D)
    acc_pf, acc_po = _zeros2(BLOCK_D)
    t0 = tl.full([], 0, tl.int32)
    while t0 < T:
        end, t, mask, bt = _backward_chunk(t0, i, T, pid_b, dmask)
        mask3 = mask[:, :, None] & (kk < 2)
        off = (bt[:, None] * D + d[None, :])[:, :, None] * 2 + kk
        u_off = (3 * bt)[:, None] * D + d[None, :]
        c, h = tl.split(tl.load(h_ptr + off, mask=mask3, other=0.0))
        g_c, g_h = tl.split(tl.load(g_ptr + off, mask=mask3, other=0.0))
        uf, uz, uo = _load_gates(u_ptr, u_off, D, mask)
        # the state before step t is the next row; past the tile it is s[end - CHUNK_T - 1], or s0.
        t_edge = end - CHUNK_T - 1
        e_off = ((pid_b.to(tl.int64) * T + tl.maximum(t_edge, 0)) * D + d) * 2  # clamped, as in the GRU
        c_edge = tl.where(t_edge >= 0, tl.load(h_ptr + e_off, mask=dmask, other=0.0), c0)
        h_edge = tl.where(t_edge >= 0, tl.load(h_ptr + e_off + 1, mask=dmask, other=0.0), h0)
        nxt = tl.minimum(rows + 1, CHUNK_T - 1)
        first = (t == 0)[:, None]
        cp = _state_before(c, c_edge, c0, rows, nxt, first, CHUNK_T)
        hp = _state_before(h, h_edge, h0, rows, nxt, first, CHUNK_T)
        f, z, cn, o, tc, df, do, j00, j01, j10, j11 = _lstm_linearised(cp, hp, uf, uz, uo, af, az, ao, pf, po)
        # μ_t = J_tᵀ (g_t + μ_{t+1}): transition Jᵀ = [[j00, j10], [j01, j11]].
        x_c = g_c + tl.where(rows == 0, mu_c[None, :], 0.0)
        x_h = g_h + tl.where(rows == 0, mu_h[None, :], 0.0)
        m_c, m_h = _block_scan(j00, j10, j01, j11, j00 * x_c + j10 * x_h, j01 * x_c + j11 * x_h, rows, LOG2_T, TL_SCAN)
        lam_c = tl.where(mask, g_c + _shift(m_c, mu_c, rows), 0.0)
        lam_h = tl.where(mask, g_h + _shift(m_h, mu_h, rows), 0.0)
        last = tl.minimum(end, CHUNK_T) - 1
        mu_c = _row(m_c, rows, last)
        mu_h = _row(m_h, rows, last)
        pre_f, pre_z, pre_o = _lstm_gate_grads(lam_c, lam_h, cp, f, z, o, tc, df, do, po)
        _store_gates(gu_ptr, u_off, D, mask, pre_f, pre_z, pre_o)
        acc_f += tl.sum(pre_f * hp, axis=0)
        acc_z += tl.sum(pre_z * hp, axis=0)
        acc_o += tl.sum(pre_o * hp, axis=0)
        acc_pf += tl.sum(pre_f * cp, axis=0)
        acc_po += tl.sum(pre_o * cn, axis=0)
        t0 += CHUNK_T
    tl.store(gh0_ptr + (pid_b * D + d) * 2, mu_c, mask=dmask)
    tl.store(gh0_ptr + (pid_b * D + d) * 2 + 1, mu_h, mask=dmask)
    _store_rows3(ga_ptr + pid_b * 3 * D, D, d, dmask, acc_f, acc_z, acc_o)
    _store_rows2(gc_ptr + pid_b * 2 * D, D, d, dmask, acc_pf, acc_po)


# ---- sequential kernels: one channel per lane, time in a loop -------------------------------------
# With enough independent (batch, channel) chains to fill the GPU, stepping the recurrence itself is
# cheaper than Newton's 3-4 passes: each step is one evaluation of f (forward) or one multiply-add on
# the adjoint (backward). ``tl.range(num_stages=STAGES)`` keeps the next steps' loads in flight; the
# interpreter cannot run a ``tl.range`` over a runtime bound, so it gets a ``while`` loop instead.
@triton.jit
def _lane_channels(D, BLOCK_D: tl.constexpr):
    """``(pid_b, d, dmask)`` of a sequential kernel's program: its batch row and channels ``[BLOCK_D]``."""
    pid_b = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    return pid_b, d, d < D


@triton.jit
def _vector_rows3(ptr, D, d, dmask, BLOCK_D: tl.constexpr):
    """Rows 0, 1, 2 of a ``(·, D)`` parameter at channels ``d``, each ``[BLOCK_D]``."""
    x0, x1, x2 = _load_rows3(ptr, D, d, dmask)
    return tl.reshape(x0, [BLOCK_D]), tl.reshape(x1, [BLOCK_D]), tl.reshape(x2, [BLOCK_D])


@triton.jit
def _lstm_vector_weights(a_ptr, c_ptr, D, d, dmask, BLOCK_D: tl.constexpr):
    """ParaLSTM's ``(a_f, a_z, a_o, c_f, c_o)`` at channels ``d``, each ``[BLOCK_D]``."""
    af, az, ao = _vector_rows3(a_ptr, D, d, dmask, BLOCK_D)
    pf, po = _load_rows2(c_ptr, D, d, dmask)
    return af, az, ao, tl.reshape(pf, [BLOCK_D]), tl.reshape(po, [BLOCK_D])


@triton.jit
def _gru_sequential_step(u_ptr, h_ptr, bt, D, d, dmask, h, az, ar, ac, FAST: tl.constexpr):
    """``h_t = f(h_{t-1}, u_t)`` at row ``bt = b·T + t``, stored; returns ``h_t`` ``[BLOCK_D]``."""
    uz, ur, uc = _load_gates(u_ptr, 3 * bt * D + d, D, dmask)
    z, r, c = _gru_gates(h, uz, ur, uc, az, ar, ac, FAST)
    h = h + z * (c - h)
    tl.store(h_ptr + bt * D + d, h, mask=dmask)
    return h


@triton.jit
def gru_sequential_forward_kernel(
    u_ptr, a_ptr, h0_ptr, h_ptr, T, D, max_norm,
    BLOCK_D: tl.constexpr, STAGES: tl.constexpr, UNROLL: tl.constexpr, INTERPRET: tl.constexpr, CLIP: tl.constexpr,
    FAST_MATH: tl.constexpr,
):  # fmt: skip
    """The exact loop ``h_t = f(h_{t-1}, u_t)``, one program per (batch row, ``BLOCK_D`` channels)
    (``CLIP``: see :func:`gru_forward_kernel`; ``FAST_MATH``: every σ and tanh by the GPU's approximate
    ``tanh``, GPU only)."""
    pid_b, d, dmask = _lane_channels(D, BLOCK_D)
    az, ar, ac = _vector_rows3(a_ptr, D, d, dmask, BLOCK_D)
    az, ar, ac = _clip_rows3(a_ptr, D, max_norm, az, ar, ac, CLIP)
    h = tl.load(h0_ptr + pid_b * D + d, mask=dmask, other=0.0)
    base = pid_b.to(tl.int64) * T
    if INTERPRET:
        t = 0
        while t < T:
            h = _gru_sequential_step(u_ptr, h_ptr, base + t, D, d, dmask, h, az, ar, ac, FAST_MATH)
            t += 1
    else:
        for t in tl.range(0, T, num_stages=STAGES, loop_unroll_factor=UNROLL):
            h = _gru_sequential_step(u_ptr, h_ptr, base + t, D, d, dmask, h, az, ar, ac, FAST_MATH)


@triton.jit
def _gru_adjoint_step(g_ptr, u_ptr, h_ptr, gu_ptr, base, t, D, d, dmask, h0, mu, az, ar, ac):
    """Step ``t`` of the reverse adjoint pass: stores ``∂L/∂u_t``; returns ``μ_t`` and the terms of
    ``∂L/∂A`` ``(gz·h_{t-1}, gr·h_{t-1}, gc·h_{t-1}·r)``."""
    bt = base + t
    uz, ur, uc = _load_gates(u_ptr, 3 * bt * D + d, D, dmask)
    g = tl.load(g_ptr + bt * D + d, mask=dmask, other=0.0)
    hp = tl.load(h_ptr + (bt - (t > 0).to(tl.int64)) * D + d, mask=dmask, other=0.0)  # h_{t-1}; row t at t=0
    hp = tl.where(t > 0, hp, h0)
    z, r, c, J = _gru_linearised(hp, uz, ur, uc, az, ar, ac)
    lam = g + mu
    gz, gr, gc = _gru_gate_grads(lam, hp, z, r, c, ac)
    _store_gates(gu_ptr, 3 * bt * D + d, D, dmask, gz, gr, gc)
    return J * lam, gz * hp, gr * hp, gc * hp * r


@triton.jit
def gru_sequential_backward_kernel(
    g_ptr, u_ptr, a_ptr, h0_ptr, h_ptr, gu_ptr, ga_ptr, gh0_ptr, T, D, max_norm,
    BLOCK_D: tl.constexpr, STAGES: tl.constexpr, UNROLL: tl.constexpr, INTERPRET: tl.constexpr, CLIP: tl.constexpr,
):  # fmt: skip
    """The adjoint ``λ_t = g_t + μ_{t+1}``, ``μ_t = J_t λ_t`` stepped from ``t = T - 1`` down to 0 (``CLIP``:
    see :func:`gru_backward_kernel`)."""
    pid_b, d, dmask = _lane_channels(D, BLOCK_D)
    az, ar, ac = _vector_rows3(a_ptr, D, d, dmask, BLOCK_D)
    az, ar, ac = _clip_rows3(a_ptr, D, max_norm, az, ar, ac, CLIP)
    h0 = tl.load(h0_ptr + pid_b * D + d, mask=dmask, other=0.0)
    mu = tl.zeros([BLOCK_D], tl.float32)
    acc_z, acc_r, acc_c = _zeros3(BLOCK_D)
    base = pid_b.to(tl.int64) * T
    if INTERPRET:
        s = 0
        while s < T:
            mu, dz, dr, dc = _gru_adjoint_step(
                g_ptr, u_ptr, h_ptr, gu_ptr, base, T - 1 - s, D, d, dmask, h0, mu, az, ar, ac
            )
            acc_z, acc_r, acc_c = acc_z + dz, acc_r + dr, acc_c + dc
            s += 1
    else:
        for s in tl.range(0, T, num_stages=STAGES, loop_unroll_factor=UNROLL):
            mu, dz, dr, dc = _gru_adjoint_step(
                g_ptr, u_ptr, h_ptr, gu_ptr, base, T - 1 - s, D, d, dmask, h0, mu, az, ar, ac
            )
            acc_z, acc_r, acc_c = acc_z + dz, acc_r + dr, acc_c + dc
    tl.store(gh0_ptr + pid_b * D + d, mu, mask=dmask)
    _store_rows3(ga_ptr + pid_b * 3 * D, D, d, dmask, acc_z, acc_r, acc_c)


@triton.jit
def _lstm_sequential_step(u_ptr, h_ptr, bt, D, d, dmask, c, h, af, az, ao, pf, po, FAST: tl.constexpr):
    """``[c_t, h_t] = f([c, h]_{t-1}, u_t)`` at row ``bt``, stored interleaved; returns ``(c_t, h_t)``."""
    uf, uz, uo = _load_gates(u_ptr, 3 * bt * D + d, D, dmask)
    _, _, c, o, tc = _lstm_gates(c, h, uf, uz, uo, af, az, ao, pf, po, FAST)
    h = o * tc
    kk = tl.arange(0, 2)[None, :]
    tl.store(h_ptr + (bt * D + d)[:, None] * 2 + kk, tl.join(c, h), mask=dmask[:, None] & (kk < 2))
    return c, h


@triton.jit
def lstm_sequential_forward_kernel(
    u_ptr, a_ptr, c_ptr, h0_ptr, h_ptr, T, D, max_norm,
    BLOCK_D: tl.constexpr, STAGES: tl.constexpr, UNROLL: tl.constexpr, INTERPRET: tl.constexpr, CLIP: tl.constexpr,
    FAST_MATH: tl.constexpr,
):  # fmt: skip
    """The exact ParaLSTM loop on the state ``[c, h]`` (see :func:`gru_sequential_forward_kernel`)."""
    pid_b, d, dmask = _lane_channels(D, BLOCK_D)
    af, az, ao, pf, po = _lstm_vector_weights(a_ptr, c_ptr, D, d, dmask, BLOCK_D)
    af, az, ao = _clip_rows3(a_ptr, D, max_norm, af, az, ao, CLIP)
    pf, po = _clip_rows2(c_ptr, D, max_norm, pf, po, CLIP)
    c, h = _load_pair(h0_ptr, pid_b, D, d, dmask)
    base = pid_b.to(tl.int64) * T
    if INTERPRET:
        t = 0
        while t < T:
            c, h = _lstm_sequential_step(u_ptr, h_ptr, base + t, D, d, dmask, c, h, af, az, ao, pf, po, FAST_MATH)
            t += 1
    else:
        for t in tl.range(0, T, num_stages=STAGES, loop_unroll_factor=UNROLL):
            c, h = _lstm_sequential_step(u_ptr, h_ptr, base + t, D, d, dmask, c, h, af, az, ao, pf, po, FAST_MATH)


@triton.jit
def _lstm_adjoint_step(g_ptr, u_ptr, h_ptr, gu_ptr, base, t, D, d, dmask, c0, h0, mu_c, mu_h, af, az, ao, pf, po):
    """Step ``t`` of the ParaLSTM reverse adjoint pass: stores ``∂L/∂u_t``; returns ``μ_t = J_tᵀ λ_t``
    ``(μ_c, μ_h)`` and the terms of ``∂L/∂A``, ``∂L/∂C`` (see :func:`lstm_backward_kernel`)."""
    bt = base + t
    uf, uz, uo = _load_gates(u_ptr, 3 * bt * D + d, D, dmask)
    kk = tl.arange(0, 2)[None, :]
    mask2 = dmask[:, None] & (kk < 2)
    g_c, g_h = tl.split(tl.load(g_ptr + (bt * D + d)[:, None] * 2 + kk, mask=mask2, other=0.0))
    prev = bt - (t > 0).to(tl.int64)  # s_{t-1}; row t at t=0, replaced by s0
    cp, hp = tl.split(tl.load(h_ptr + (prev * D + d)[:, None] * 2 + kk, mask=mask2, other=0.0))
    cp = tl.where(t > 0, cp, c0)
    hp = tl.where(t > 0, hp, h0)
    f, z, cn, o, tc, df, do, j00, j01, j10, j11 = _lstm_linearised(cp, hp, uf, uz, uo, af, az, ao, pf, po)
    lam_c = g_c + mu_c
    lam_h = g_h + mu_h
    pre_f, pre_z, pre_o = _lstm_gate_grads(lam_c, lam_h, cp, f, z, o, tc, df, do, po)
    _store_gates(gu_ptr, 3 * bt * D + d, D, dmask, pre_f, pre_z, pre_o)
    mu_c = j00 * lam_c + j10 * lam_h
    mu_h = j01 * lam_c + j11 * lam_h
    return mu_c, mu_h, pre_f * hp, pre_z * hp, pre_o * hp, pre_f * cp, pre_o * cn


@triton.jit
def lstm_sequential_backward_kernel(
    g_ptr, u_ptr, a_ptr, c_ptr, h0_ptr, h_ptr, gu_ptr, ga_ptr, gc_ptr, gh0_ptr, T, D, max_norm,
    BLOCK_D: tl.constexpr, STAGES: tl.constexpr, UNROLL: tl.constexpr, INTERPRET: tl.constexpr, CLIP: tl.constexpr,
):  # fmt: skip
    """The ParaLSTM adjoint stepped from the end (see :func:`gru_sequential_backward_kernel`)."""
    pid_b, d, dmask = _lane_channels(D, BLOCK_D)
    af, az, ao, pf, po = _lstm_vector_weights(a_ptr, c_ptr, D, d, dmask, BLOCK_D)
    af, az, ao = _clip_rows3(a_ptr, D, max_norm, af, az, ao, CLIP)
    pf, po = _clip_rows2(c_ptr, D, max_norm, pf, po, CLIP)
    c0, h0 = _load_pair(h0_ptr, pid_b, D, d, dmask)
    mu_c, mu_h = _zeros2(BLOCK_D)
    acc_f, acc_z, acc_o = _zeros3(BLOCK_D)
    acc_pf, acc_po = _zeros2(BLOCK_D)
    base = pid_b.to(tl.int64) * T
    if INTERPRET:
        s = 0
        while s < T:
            mu_c, mu_h, x_f, x_z, x_o, x_pf, x_po = _lstm_adjoint_step(
                g_ptr, u_ptr, h_ptr, gu_ptr, base, T - 1 - s, D, d, dmask, c0, h0, mu_c, mu_h, af, az, ao, pf, po
            )
            acc_f, acc_z, acc_o, acc_pf, acc_po = acc_f + x_f, acc_z + x_z, acc_o + x_o, acc_pf + x_pf, acc_po + x_po
            s += 1
    else:
        for s in tl.range(0, T, num_stages=STAGES, loop_unroll_factor=UNROLL):
            mu_c, mu_h, x_f, x_z, x_o, x_pf, x_po = _lstm_adjoint_step(
                g_ptr, u_ptr, h_ptr, gu_ptr, base, T - 1 - s, D, d, dmask, c0, h0, mu_c, mu_h, af, az, ao, pf, po
            )
            acc_f, acc_z, acc_o, acc_pf, acc_po = acc_f + x_f, acc_z + x_z, acc_o + x_o, acc_pf + x_pf, acc_po + x_po
    tl.store(gh0_ptr + (pid_b * D + d) * 2, mu_c, mask=dmask)
    tl.store(gh0_ptr + (pid_b * D + d) * 2 + 1, mu_h, mask=dmask)
    _store_rows3(ga_ptr + pid_b * 3 * D, D, d, dmask, acc_f, acc_z, acc_o)
    _store_rows2(gc_ptr + pid_b * 2 * D, D, d, dmask, acc_pf, acc_po)


# ---- weight-row clip, backward ------------------------------------------------------------------
@triton.jit
def clip_rows_backward_kernel(w_ptr, g_ptr, out_ptr, NB, R, D, max_norm):
    """``out[r]`` ``(R, D)``: the gradient of the rows ``w[r]`` ``(R, D)`` before ``torch.renorm``'s clip to
    ``max_norm``, given per-batch partials ``g`` ``(NB, R, D)`` of the gradient after it; one program per row.

    With ``n = ‖w_r‖``, ``s = max_norm / (n + 1e-7)`` and ``ĝ = Σ_b g[b, r]``: ``s ĝ − s (w_r·ĝ) w_r / (n (n + 1e-7))``
    where ``n > max_norm``, else ``ĝ``.
    """
    row = tl.program_id(0)
    w_row, g_row = w_ptr + row * D, g_ptr + row * D
    norm = tl.sqrt(_row_dot(w_row, w_row, D, 1, 0))
    clipped = norm > max_norm
    scale = tl.where(clipped, max_norm / (norm + 1e-7), 1.0)
    coef = tl.where(clipped, scale * _row_dot(w_row, g_row, D, NB, R * D) / (norm * (norm + 1e-7)), 0.0)
    start = 0
    while start < D:
        k = start + tl.arange(0, NORM_BLOCK)
        w = tl.load(w_row + k, mask=k < D, other=0.0)
        g = _batch_sum(g_row, NB, R * D, k, k < D)
        tl.store(out_ptr + row * D + k, scale * g - coef * w, mask=k < D)
        start += NORM_BLOCK


# ---- standalone linear scans --------------------------------------------------------------------
@triton.jit
def diagonal_scan_kernel(
    j_ptr, b_ptr, x0_ptr, x_ptr, T, D,
    REVERSE: tl.constexpr, CHUNK_T: tl.constexpr, BLOCK_D: tl.constexpr, LOG2_T: tl.constexpr,
    TL_SCAN: tl.constexpr,
):  # fmt: skip
    """``x_t = J_t x_{t∓1} + b_t`` on ``(B, T, D)``; chunks walk backwards in time when ``REVERSE``."""
    pid_b, _, d, dmask, i, rows = _program_tile(D, CHUNK_T, BLOCK_D)
    carry = tl.load(x0_ptr + pid_b * D + d, mask=dmask, other=0.0).to(tl.float32)
    t0 = tl.full([], 0, tl.int32)
    while t0 < T:
        t, mask = _scan_chunk(t0, i, T, dmask, REVERSE)
        off = (pid_b.to(tl.int64) * T + t)[:, None] * D + d[None, :]
        a = tl.load(j_ptr + off, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + off, mask=mask, other=0.0).to(tl.float32)
        b += tl.where(rows == 0, a * carry[None, :], 0.0)
        x = _diag_scan(a, b, rows, LOG2_T, TL_SCAN)
        tl.store(x_ptr + off, x, mask=mask)
        carry = _row(x, rows, tl.minimum(T - t0, CHUNK_T) - 1)
        t0 += CHUNK_T


@triton.jit
def block2_scan_kernel(
    j_ptr, b_ptr, x0_ptr, x_ptr, T, D,
    REVERSE: tl.constexpr, CHUNK_T: tl.constexpr, BLOCK_D: tl.constexpr, LOG2_T: tl.constexpr,
    TL_SCAN: tl.constexpr,
):  # fmt: skip
    """``x_t = J_t x_{t∓1} + b_t`` with ``J`` ``(B, T, D, 2, 2)`` and ``b``, ``x`` ``(B, T, D, 2)``."""
    pid_b, _, d, dmask, i, rows = _program_tile(D, CHUNK_T, BLOCK_D)
    kk = tl.arange(0, 2)[None, None, :]
    carry0, carry1 = _load_pair(x0_ptr, pid_b, D, d, dmask)
    carry0, carry1 = carry0.to(tl.float32), carry1.to(tl.float32)
    t0 = tl.full([], 0, tl.int32)
    while t0 < T:
        t, mask = _scan_chunk(t0, i, T, dmask, REVERSE)
        mask3 = mask[:, :, None] & (kk < 2)
        off = ((pid_b.to(tl.int64) * T + t)[:, None] * D + d[None, :])[:, :, None] * 2 + kk  # [CT, BD, 2]
        col = tl.arange(0, 2)[None, None, None, :]
        j_off = off[:, :, :, None] * 2 + col  # [CHUNK_T, BLOCK_D, row, col]
        col0, col1 = tl.split(tl.load(j_ptr + j_off, mask=mask3[:, :, :, None] & (col < 2), other=0.0))
        a00, a10 = tl.split(col0.to(tl.float32))
        a01, a11 = tl.split(col1.to(tl.float32))
        b0, b1 = tl.split(tl.load(b_ptr + off, mask=mask3, other=0.0).to(tl.float32))
        b0 += tl.where(rows == 0, a00 * carry0[None, :] + a01 * carry1[None, :], 0.0)
        b1 += tl.where(rows == 0, a10 * carry0[None, :] + a11 * carry1[None, :], 0.0)
        x0, x1 = _block_scan(a00, a01, a10, a11, b0, b1, rows, LOG2_T, TL_SCAN)
        tl.store(x_ptr + off, tl.join(x0, x1), mask=mask3)
        last = tl.minimum(T - t0, CHUNK_T) - 1
        carry0 = _row(x0, rows, last)
        carry1 = _row(x1, rows, last)
        t0 += CHUNK_T


# ---- launch configuration -----------------------------------------------------------------------
#: (BLOCK_D, CHUNK_T, num_warps) of each kernel on a GPU: the fastest of a small sweep on an H100 at
#: B=16, T=8192, D=1024 (about 8 tile elements per thread; 16 or more spill registers in the LSTM kernels)
GPU_TILES = {
    "gru_forward": (8, 64, 2),
    "gru_backward": (8, 64, 2),
    "lstm_forward": (8, 32, 2),
    "lstm_backward": (16, 128, 4),
    "diagonal_scan": (64, 64, 4),
    "block2_scan": (8, 64, 2),
}
#: (BLOCK_D, STAGES, num_warps, UNROLL) of the sequential kernels on a GPU, STAGES steps of loads in flight
#: and the loop body unrolled UNROLL times: the fastest forward + backward of sweeps on an H100 at B=16,
#: T=8192, D=1024 (4 stages: 1.4x slower, 8-16 flat; unrolling by 2 cut the GRU forward 9% and backward 19%
#: at T=8192 and 65536, by 4 was slower than by 2)
GPU_SEQUENTIAL = {"gru": (64, 8, 2, 2), "lstm": (64, 12, 2, 2)}
#: (BLOCK_D, CHUNK_T) under TRITON_INTERPRET=1: big tiles, since the interpreter's cost is per op
INTERPRETER_TILE = (64, 1024)
#: compiler options of every launch: contract a * b + c into one FMA, as the kernels were tuned and tested
#: (Triton 3.10 turns this off by default: separate roundings, and a longer chain of dependent instructions per
#: step of the sequential kernels, whose forward is bound by that chain's latency)
COMPILER_OPTIONS = {"enable_fp_fusion": True}


def _check_powers_of_two(**values: int) -> None:
    for name, value in values.items():
        if value < 1 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two, got {value}")


def launch_config(
    kernel: str,
    on_gpu: bool,
    block_d: int | None = None,
    chunk_t: int | None = None,
    num_warps: int | None = None,
    tl_scan: bool | None = None,
) -> dict:
    """Meta-parameters of ``kernel`` (a key of :data:`GPU_TILES`); ``None`` picks the default.

    ``tl_scan`` chooses ``tl.associative_scan`` (default on GPU) over the gather-doubling scan
    (default in the interpreter, where a custom-combine scan runs element by element).
    """
    bd, ct, nw = GPU_TILES[kernel] if on_gpu else (*INTERPRETER_TILE, 4)
    bd, ct, nw = block_d or bd, chunk_t or ct, num_warps or nw
    _check_powers_of_two(block_d=bd, chunk_t=ct, num_warps=nw)
    return {
        "BLOCK_D": bd,
        "CHUNK_T": ct,
        "LOG2_T": ct.bit_length() - 1,
        "TL_SCAN": on_gpu if tl_scan is None else bool(tl_scan),
        "num_warps": nw,
        **COMPILER_OPTIONS,
    }


def sequential_config(
    kernel: str,
    on_gpu: bool,
    block_d: int | None = None,
    stages: int | None = None,
    num_warps: int | None = None,
    unroll: int | None = None,
    fast_math: bool = False,
) -> dict:
    """Meta-parameters of the sequential twin of ``kernel`` (``"gru_forward"``, ..., ``"lstm_backward"``).

    ``fast_math`` (forward kernels, GPU only): every σ and tanh by the GPU's approximate ``tanh``.
    """
    bd, st, nw, ur = GPU_SEQUENTIAL[kernel.split("_")[0]] if on_gpu else (INTERPRETER_TILE[0], 1, 4, 1)
    chosen = ((block_d, bd), (stages, st), (num_warps, nw), (unroll, ur))
    bd, st, nw, ur = (default if value is None else value for value, default in chosen)
    _check_powers_of_two(block_d=bd, num_warps=nw)
    for name, value in (("stages", st), ("unroll", ur)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    forward = kernel.endswith("_forward")
    if fast_math and not forward:
        raise ValueError(f"fast_math applies to the forward kernels only, not {kernel!r} (the adjoint stays exact)")
    if fast_math and not on_gpu:
        raise ValueError(
            "fast_math=True needs a CUDA GPU: its tanh.approx.f32 instruction has no twin under "
            "TRITON_INTERPRET=1; leave it False on CPU"
        )
    cfg = {"BLOCK_D": bd, "STAGES": st, "UNROLL": ur, "INTERPRET": not on_gpu, "num_warps": nw, **COMPILER_OPTIONS}
    return {**cfg, "FAST_MATH": bool(fast_math)} if forward else cfg
