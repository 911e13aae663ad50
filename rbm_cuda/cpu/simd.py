"""Vector building blocks of the Numba kernels, written as LLVM IR through numba.extending.intrinsic.

Why IR: Numba cannot keep vector running sums in registers across a loop over rows (its arrays live
in memory, and LLVM's vectoriser only vectorises innermost loops, leaving a scalar remainder for
F = 100), and it has no masked loads.  The blocks here use plain LLVM vector types (<16 x float>)
and llvm.masked.load/store, which LLVM lowers for whatever the CPU has (AVX-512 masks here, AVX2
blends or scalar code elsewhere).  Every block performs the same float operations, in the same order,
as the plain loop its docstring gives, so results do not depend on the vector width.
"""

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

# Lanes per vector (a 512-bit register of float32; LLVM splits it where registers are narrower).
LANES = 16
# Running-sum vectors held in registers per pass over the rows: 112 columns, so F = 100 takes one
# pass; wider rows take several passes, each over all the rows.
_PASS_VECTORS = 7
# Rated entries ahead whose W rows are prefetched (gather_rows_sum here, and the kernels' loops over
# bernoulli values and scatter_gradients).
PREFETCH_AHEAD = 8
# tile_logits: levels summed by fused multiply-adds, the others by masked additions.
_FMA_LEVELS = 2

# Cephes' float32 exp (kernels._expf and its vector twin _expf_ir): exp(x) = 2^n exp(r), x = n ln2 + r,
# ln2 split into a high part exact in float32 and a low correction; exp(r) by a degree-7 polynomial.
EXPF_FLOOR = -87.0
EXPF_LOG2E = 1.44269504
EXPF_LN2_HI = 0.693359375
EXPF_LN2_LO = -2.12194440e-4
EXPF_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)

_I1 = ir.IntType(1)
_I8P = ir.IntType(8).as_pointer()
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
_VF = ir.VectorType(F32, LANES)
_VI = ir.VectorType(I32, LANES)
_VB = ir.VectorType(_I1, LANES)
_VL = ir.VectorType(I64, LANES)


def ir_const(n):
    return ir.Constant(I64, n)


def splat(builder, vector_type, x):
    first = builder.insert_element(ir.Constant(vector_type, None), x, ir.Constant(I32, 0))
    zeros = ir.Constant(ir.VectorType(I32, vector_type.count), [0] * vector_type.count)
    return builder.shuffle_vector(first, ir.Constant(vector_type, None), zeros)


def _vector_at(builder, base, offset):
    return builder.bitcast(builder.gep(base, [offset]), _VF.as_pointer())


def _masked_load(builder, ptr, mask, vector_type=_VF):
    """The lanes in mask of the vector at ptr (0 in the others); float32 or int32 lanes."""
    name = "v16f32" if vector_type == _VF else "v16i32"
    fnty = ir.FunctionType(vector_type, [vector_type.as_pointer(), I32, _VB, vector_type])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.{name}.p0")
    return builder.call(fn, [ptr, ir.Constant(I32, 4), mask, ir.Constant(vector_type, None)])


def _masked_store(builder, value, ptr, mask):
    fn = cgutils.get_or_insert_function(builder.module,
                                        ir.FunctionType(ir.VoidType(), [_VF, _VF.as_pointer(), I32, _VB]),
                                        "llvm.masked.store.v16f32.p0")
    builder.call(fn, [value, ptr, ir.Constant(I32, 4), mask])


def _prefetch_line(builder, ptr):
    """llvm.prefetch(read, locality 1, data) of the line holding ptr (prefetcht2 on x86-64: into L2,
    not L1): no effect on results.  Into L1 (locality 3) the fetched lines evict what the loops are
    working on; into L2 they arrive in time without that, when W outgrows the last-level cache."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [_I8P, I32, I32, I32]),
                                        "llvm.prefetch.p0")
    builder.call(fn, [builder.bitcast(ptr, _I8P), ir.Constant(I32, 0), ir.Constant(I32, 1), ir.Constant(I32, 1)])


def counted_loop(builder, name, first, last, start_values, body, step=1):
    """IR for: values = start_values; for i in first, first + step, ... < last: values = body(i, values).
    Returns the values after the loop (start_values if it did not run); body may add blocks."""
    entry = builder.block
    loop = builder.append_basic_block(name)
    after = builder.append_basic_block(name + ".after")
    builder.cbranch(builder.icmp_signed("<", first, last), loop, after)
    builder.position_at_end(loop)
    i = builder.phi(I64)
    i.add_incoming(first, entry)
    values = []
    for v in start_values:
        p = builder.phi(v.type)
        p.add_incoming(v, entry)
        values.append(p)
    new = body(i, values)
    i_next = builder.add(i, ir_const(step))
    end = builder.block
    i.add_incoming(i_next, end)
    for p, x in zip(values, new):
        p.add_incoming(x, end)
    builder.cbranch(builder.icmp_signed("<", i_next, last), loop, after)
    builder.position_at_end(after)
    out = []
    for v, x in zip(start_values, new):
        p = builder.phi(v.type)
        p.add_incoming(v, entry)
        p.add_incoming(x, end)
        out.append(p)
    return out


def _column_masks(builder, n_cols, c0):
    """The masks of the _PASS_VECTORS vectors of columns c0 .. c0 + _PASS_VECTORS * LANES - 1 of a row
    of n_cols: a lane is on while its column is in the row."""
    lanes = ir.Constant(_VI, list(range(LANES)))
    masks = []
    for v in range(_PASS_VECTORS):
        left = builder.sub(n_cols, builder.add(c0, ir_const(v * LANES)))
        left = builder.select(builder.icmp_signed(">", left, ir_const(LANES)), ir_const(LANES), left)
        masks.append(builder.icmp_signed("<", lanes, splat(builder, _VI, builder.trunc(left, I32))))
    return masks


def _row_sums(builder, mat_ptr, n_cols, c0, masks, t0, t1, row_of, sums, negate=False, prefetch=False):
    """IR for: for t in t0 .. t1 - 1: sums = sums + mat[row_of(t), c0:] (- when negate), the columns of
    one pass held in registers; returns the sums.  mat is row-major with n_cols columns; row_of(t)
    gives an i64 row.  With prefetch, the row PREFETCH_AHEAD on is requested too."""

    def add_row(t, values):
        if prefetch:
            ahead = builder.add(t, ir_const(PREFETCH_AHEAD))
            with builder.if_then(builder.icmp_signed("<", ahead, t1)):
                row_base = builder.gep(mat_ptr, [builder.add(builder.mul(row_of(ahead), n_cols), c0)])
                for v in range(_PASS_VECTORS):
                    _prefetch_line(builder, builder.gep(row_base, [ir_const(v * LANES)]))
        base = builder.add(builder.mul(row_of(t), n_cols), c0)
        new = []
        for v in range(_PASS_VECTORS):
            x = _masked_load(builder, _vector_at(builder, mat_ptr, builder.add(base, ir_const(v * LANES))), masks[v])
            new.append(builder.fsub(values[v], x) if negate else builder.fadd(values[v], x))
        return new

    return counted_loop(builder, "rows", t0, t1, sums, add_row)


def _level_update_ir(builder, w_ptr, v_ptr, pos_mat, pos_row, n_pos, neg_mat, neg_row, n_neg, n_cols, coef):
    """IR for level_update (coef: lr, mom, wd, sc as float values)."""
    lr, mom, wd, sc = (splat(builder, _VF, x) for x in coef)

    def one_pass(c0, _):
        masks = _column_masks(builder, n_cols, c0)
        g = [ir.Constant(_VF, None)] * _PASS_VECTORS
        g = _row_sums(builder, pos_mat, n_cols, c0, masks, ir_const(0), n_pos, pos_row, g)
        g = _row_sums(builder, neg_mat, n_cols, c0, masks, ir_const(0), n_neg, neg_row, g, negate=True)
        for v in range(_PASS_VECTORS):
            w_at = _vector_at(builder, w_ptr, builder.add(c0, ir_const(v * LANES)))
            v_at = _vector_at(builder, v_ptr, builder.add(c0, ir_const(v * LANES)))
            w = _masked_load(builder, w_at, masks[v])
            step = builder.fadd(builder.fmul(mom, _masked_load(builder, v_at, masks[v])),
                                builder.fmul(lr, builder.fsub(builder.fmul(sc, g[v]), builder.fmul(wd, w))))
            _masked_store(builder, step, v_at, masks[v])
            _masked_store(builder, builder.fadd(w, step), w_at, masks[v])
        return []

    counted_loop(builder, "level.pass", ir_const(0), n_cols, [], one_pass, step=_PASS_VECTORS * LANES)


@intrinsic
def level_update(typingctx, w, vel, ph0, pos_rows, n_pos, phT, neg_rows, n_neg, lr, mom, wd, sc):
    """One item level's gradient and momentum step, its sums held in registers:

        g = 0
        for t < n_pos: g = g + ph0[pos_rows[t]]
        for t < n_neg: g = g - phT[neg_rows[t]]
        v = mom * vel + lr * (sc * g - wd * w);  vel = v;  w = w + v

    (update_softmax's gradient and kernels._update_range, the same float operations in the same
    order).  It replaces a K x F scratch gradient summed into a row at a time for items with few
    slots: each row's masked store was loaded back by the next row before it reached the cache,
    which the CPU cannot forward from its store buffer.
    w, vel float32[F] (one level of W[i] and of its velocity); ph0, phT float32[B, F]; pos_rows,
    neg_rows int32[>= n]; lr, mom, wd, sc float32."""
    if not (is_array(w, 1, types.float32) and is_array(vel, 1, types.float32)
            and is_array(ph0, 2, types.float32) and is_array(pos_rows, 1, types.int32)
            and isinstance(n_pos, types.Integer) and is_array(phT, 2, types.float32)
            and is_array(neg_rows, 1, types.int32) and isinstance(n_neg, types.Integer)
            and all(x == types.float32 for x in (lr, mom, wd, sc))):
        return None

    def codegen(context, builder, sig, args):
        w_a, v_a, p_a, pr_a = (context.make_array(sig.args[i])(context, builder, args[i]) for i in range(4))
        n_a, nr_a = (context.make_array(sig.args[i])(context, builder, args[i]) for i in (5, 6))
        n_pos = context.cast(builder, args[4], sig.args[4], types.int64)
        n_neg = context.cast(builder, args[7], sig.args[7], types.int64)
        n_cols = cgutils.unpack_tuple(builder, p_a.shape, 2)[1]

        def row_in(rows_a):
            return lambda t: builder.sext(builder.load(builder.gep(rows_a.data, [t])), I64)

        _level_update_ir(builder, w_a.data, v_a.data, p_a.data, row_in(pr_a), n_pos, n_a.data, row_in(nr_a), n_neg,
                         n_cols, args[8:12])
        return context.get_dummy_value()

    return types.void(w, vel, ph0, pos_rows, n_pos, phT, neg_rows, n_neg, lr, mom, wd, sc), codegen


@intrinsic
def prefetch(typingctx, arr, index):
    """Hint the CPU to fetch the cache line holding arr[index] (1-d, C-contiguous) into L2 (see
    _prefetch_line).  No effect on results."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        _prefetch_line(builder, builder.gep(ary.data, [context.cast(builder, args[1], sig.args[1], types.intp)]))
        return context.get_dummy_value()

    return types.void(arr, index), codegen


@intrinsic
def float_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the int32 `bits` (a bitcast; vectorises)."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 32):
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], F32)

    return types.float32(bits), codegen


def is_array(x, ndim, dtype):
    return isinstance(x, types.Array) and x.ndim == ndim and x.dtype == dtype and x.layout == "C"


@intrinsic
def gather_rows_sum(typingctx, out, W, indices, states, j0, j1):
    """for j in j0 .. j1 - 1: out += W[indices[j], states[j]], in j order (a user's hidden input in
    sample_hidden); the W row PREFETCH_AHEAD entries on is prefetched (rows come in random item order).
    out float32[F], W float32[I, K, F], indices and states int32[nnz]."""
    if not (is_array(out, 1, types.float32) and is_array(W, 3, types.float32)
            and is_array(indices, 1, types.int32) and is_array(states, 1, types.int32)
            and isinstance(j0, types.Integer) and isinstance(j1, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        out_a = context.make_array(sig.args[0])(context, builder, args[0])
        w_a = context.make_array(sig.args[1])(context, builder, args[1])
        ind_a = context.make_array(sig.args[2])(context, builder, args[2])
        st_a = context.make_array(sig.args[3])(context, builder, args[3])
        first = context.cast(builder, args[4], sig.args[4], types.int64)
        end = context.cast(builder, args[5], sig.args[5], types.int64)
        _, n_levels, n_cols = cgutils.unpack_tuple(builder, w_a.shape, 3)

        def row_of(j):
            item = builder.sext(builder.load(builder.gep(ind_a.data, [j])), I64)
            level = builder.sext(builder.load(builder.gep(st_a.data, [j])), I64)
            return builder.add(builder.mul(item, n_levels), level)

        def one_pass(c0, _):
            masks = _column_masks(builder, n_cols, c0)
            out = [_vector_at(builder, out_a.data, builder.add(c0, ir_const(v * LANES))) for v in range(_PASS_VECTORS)]
            sums = [_masked_load(builder, out[v], masks[v]) for v in range(_PASS_VECTORS)]
            sums = _row_sums(builder, w_a.data, n_cols, c0, masks, first, end, row_of, sums, prefetch=True)
            for v in range(_PASS_VECTORS):
                _masked_store(builder, sums[v], out[v], masks[v])
            return []

        counted_loop(builder, "rows.pass", ir_const(0), n_cols, [], one_pass, step=_PASS_VECTORS * LANES)
        return context.get_dummy_value()

    return types.void(out, W, indices, states, j0, j1), codegen


def _lanes_below(builder, n):
    """<LANES x i1>: lane r is on when r < n (an i64)."""
    return builder.icmp_signed("<", ir.Constant(_VL, list(range(LANES))), splat(builder, _VL, n))


def _load_indices(builder, base, first, mask):
    """The int32 base[first + r] of the lanes in mask, as <LANES x i64> (0 in the others)."""
    ptr = builder.bitcast(builder.gep(base, [first]), _VI.as_pointer())
    return builder.sext(_masked_load(builder, ptr, mask, _VI), _VL)


def _element_addresses(builder, base, index, size):
    """<LANES x ptr> to base[index[r]] for elements of `size` bytes."""
    start = splat(builder, _VL, builder.ptrtoint(base, I64))
    return builder.add(start, builder.mul(index, ir.Constant(_VL, [size] * LANES)))


def _masked_gather(builder, vector_type, addresses, mask):
    """The elements at `addresses` of the lanes in mask (0 in the others)."""
    element = vector_type.element
    name, size = {I32: ("v16i32", 4), I64: ("v16i64", 8), F32: ("v16f32", 4)}[element]
    ptrs = builder.inttoptr(addresses, ir.VectorType(element.as_pointer(), LANES))
    fnty = ir.FunctionType(vector_type, [ptrs.type, I32, _VB, vector_type])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.gather.{name}.v16p0")
    return builder.call(fn, [ptrs, ir.Constant(I32, size), mask, ir.Constant(vector_type, None)])


@intrinsic
def tile_gather(typingctx, bits, slot_b, slot_p, u, q0, n, hw, ub):
    """A tile's inputs for tile_logits and tile_softmax_draws, gathered straight into vector registers
    and stored whole: for r < n and w < W,

        hw[w, r] = bits[slot_b[q0 + r], w]        ub[r] = u[slot_p[q0 + r]]

    and 0 in the lanes r >= n.  bits uint32[B, W]; slot_b, slot_p int32[>= q0 + n]; u float32[*];
    hw uint32[W, LANES]; ub float32[LANES]; 1 <= n <= LANES.  Written as that loop, the 16 scalar
    stores of each row were then loaded as one vector, which the CPU cannot forward from the store
    buffer: the tile would wait for them to reach the cache."""
    if not (is_array(bits, 2, types.uint32) and is_array(slot_b, 1, types.int32)
            and is_array(slot_p, 1, types.int32) and is_array(u, 1, types.float32)
            and isinstance(q0, types.Integer) and isinstance(n, types.Integer)
            and is_array(hw, 2, types.uint32) and is_array(ub, 1, types.float32)):
        return None

    def codegen(context, builder, sig, args):
        bits_a, sb_a, sp_a, u_a = (context.make_array(sig.args[i])(context, builder, args[i]) for i in range(4))
        hw_a = context.make_array(sig.args[6])(context, builder, args[6])
        ub_a = context.make_array(sig.args[7])(context, builder, args[7])
        first = context.cast(builder, args[4], sig.args[4], types.int64)
        mask = _lanes_below(builder, context.cast(builder, args[5], sig.args[5], types.int64))
        n_words = cgutils.unpack_tuple(builder, bits_a.shape, 2)[1]
        hw_stride = cgutils.unpack_tuple(builder, hw_a.shape, 2)[1]
        rows = builder.mul(_load_indices(builder, sb_a.data, first, mask), splat(builder, _VL, n_words))

        def one_word(w, values):
            words = _masked_gather(builder, _VI, _element_addresses(builder, bits_a.data,
                                   builder.add(rows, splat(builder, _VL, w)), 4), mask)
            builder.store(words, builder.bitcast(builder.gep(hw_a.data, [builder.mul(w, hw_stride)]), _VI.as_pointer()),
                          align=4)
            return []

        counted_loop(builder, "gather.words", ir_const(0), n_words, [], one_word)
        at = _element_addresses(builder, u_a.data, _load_indices(builder, sp_a.data, first, mask), 4)
        builder.store(_masked_gather(builder, _VF, at, mask), _vector_at(builder, ub_a.data, ir_const(0)), align=4)
        return context.get_dummy_value()

    return types.void(bits, slot_b, slot_p, u, q0, n, hw, ub), codegen


@intrinsic
def tile_scatter(typingctx, chosen, slot_b, slot_p, delta, q0, n, out):
    """A tile's draws to their CSR positions: for r < n,

        out[slot_p[q0 + r] + delta[slot_b[q0 + r]]] = chosen[r]

    (the positions differ within a tile: one item, distinct batch rows).  chosen int32[LANES];
    slot_b, slot_p int32[>= q0 + n]; delta int64[B]; out int32[*]; 1 <= n <= LANES."""
    if not (is_array(chosen, 1, types.int32) and is_array(slot_b, 1, types.int32)
            and is_array(slot_p, 1, types.int32) and is_array(delta, 1, types.int64)
            and isinstance(q0, types.Integer) and isinstance(n, types.Integer) and is_array(out, 1, types.int32)):
        return None

    def codegen(context, builder, sig, args):
        c_a, sb_a, sp_a, d_a = (context.make_array(sig.args[i])(context, builder, args[i]) for i in range(4))
        out_a = context.make_array(sig.args[6])(context, builder, args[6])
        first = context.cast(builder, args[4], sig.args[4], types.int64)
        mask = _lanes_below(builder, context.cast(builder, args[5], sig.args[5], types.int64))
        d = _masked_gather(builder, _VL, _element_addresses(builder, d_a.data,
                           _load_indices(builder, sb_a.data, first, mask), 8), mask)
        j = builder.add(_load_indices(builder, sp_a.data, first, mask), d)
        ptrs = builder.inttoptr(_element_addresses(builder, out_a.data, j, 4), ir.VectorType(I32.as_pointer(), LANES))
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [_VI, ptrs.type, I32, _VB]),
                                            "llvm.masked.scatter.v16i32.v16p0")
        values = builder.load(builder.bitcast(c_a.data, _VI.as_pointer()), align=4)
        builder.call(fn, [values, ptrs, ir.Constant(I32, 4), mask])
        return context.get_dummy_value()

    return types.void(chosen, slot_b, slot_p, delta, q0, n, out), codegen


def _tile_logits_ir(builder, w_ptr, n_cols, hw_ptr, hw_stride, z_ptr, z_stride, k0, n_acc, lanes):
    """IR for tile_logits with `lanes` ratings per vector."""
    vf = ir.VectorType(F32, lanes)
    vi = ir.VectorType(I32, lanes)

    def add_unit(f, sums):
        word = builder.lshr(f, ir_const(5))
        words = builder.load(builder.bitcast(builder.gep(hw_ptr, [builder.mul(word, hw_stride)]), vi.as_pointer()),
                             align=4)
        # Bit f % 32 moved to the sign: tested as "bit != 0" LLVM turned the masked additions into an
        # addition plus a blend.
        up = builder.sub(ir.Constant(I32, 31), builder.trunc(builder.and_(f, ir_const(31)), I32))
        on = builder.icmp_signed("<", builder.shl(words, splat(builder, vi, up)), ir.Constant(vi, None))
        h = builder.select(on, ir.Constant(vf, [1.0] * lanes), ir.Constant(vf, None))
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf, vf, vf]), f"llvm.fma.v{lanes}f32")
        new = []
        for m in range(n_acc):
            row = builder.add(k0, ir_const(m))
            w = builder.load(builder.gep(w_ptr, [builder.add(builder.mul(row, n_cols), f)]), align=4)
            w = splat(builder, vf, w)
            if m < _FMA_LEVELS:
                new.append(builder.call(fma, [h, w, sums[m]]))
            else:
                new.append(builder.select(on, builder.fadd(sums[m], w), sums[m]))
        return new

    result = counted_loop(builder, "tile", ir_const(0), n_cols, [ir.Constant(vf, None)] * n_acc, add_unit)
    for m in range(n_acc):
        row = builder.add(k0, ir_const(m))
        ptr = builder.bitcast(builder.gep(z_ptr, [builder.mul(row, z_stride)]), vf.as_pointer())
        builder.store(result[m], ptr, align=4)


@intrinsic(prefer_literal=True)
def tile_logits(typingctx, Wi, hw, k0, n_acc, n, z):
    """Logits of up to LANES ratings of one item at once, a rating per vector lane, for binary hidden
    states given as bits: for m < n_acc (a literal) and r < LANES,

        z[k0 + m, r] = sum over f = 0, 1, ..., F - 1 (in that order) of Wi[k0 + m, f] * h_r[f]

    with h_r[f] bit f % 32 of hw[f // 32, r].  That is the CUDA level_logits dot product, same order,
    so the same bits for finite weights.  nvcc compiles `dot += hb[f] * w[f]` to a fused multiply-add:
    with h = 1 the sum rounded once, with h = 0 the sum unchanged (the sums start at +0.0 and can never
    become -0.0).  The first _FMA_LEVELS levels are summed so; the others by a masked addition, the
    weight added in the lanes whose bit is set, which is the same result.  Mixing the two keeps both
    the FMA and the add ports busy.  The n_acc sums stay in registers for
    the whole f loop and each weight is loaded once for all the ratings; there are no horizontal
    sums.  With n <= 8 valid ratings only lanes 0..7 are computed (half the work).
    Wi float32[K, F]; hw uint32[ceil(F / 32), LANES]; z float32[K, LANES]; lanes >= n are garbage."""
    if not (is_array(Wi, 2, types.float32) and is_array(hw, 2, types.uint32) and is_array(z, 2, types.float32)
            and isinstance(k0, types.Integer) and isinstance(n_acc, types.IntegerLiteral)
            and isinstance(n, types.Integer)):
        return None
    n_sums = n_acc.literal_value

    def codegen(context, builder, sig, args):
        w_a = context.make_array(sig.args[0])(context, builder, args[0])
        hw_a = context.make_array(sig.args[1])(context, builder, args[1])
        z_a = context.make_array(sig.args[5])(context, builder, args[5])
        first = context.cast(builder, args[2], sig.args[2], types.int64)
        count = context.cast(builder, args[4], sig.args[4], types.int64)
        n_cols = cgutils.unpack_tuple(builder, w_a.shape, 2)[1]
        hw_stride = cgutils.unpack_tuple(builder, hw_a.shape, 2)[1]
        z_stride = cgutils.unpack_tuple(builder, z_a.shape, 2)[1]
        narrow = builder.append_basic_block("tile.narrow")
        wide = builder.append_basic_block("tile.wide")
        merge = builder.append_basic_block("tile.merge")
        builder.cbranch(builder.icmp_signed("<=", count, ir_const(LANES // 2)), narrow, wide)
        for block, lanes in ((narrow, LANES // 2), (wide, LANES)):
            builder.position_at_end(block)
            _tile_logits_ir(builder, w_a.data, n_cols, hw_a.data, hw_stride, z_a.data, z_stride, first, n_sums, lanes)
            builder.branch(merge)
        builder.position_at_end(merge)
        return context.get_dummy_value()

    return types.void(Wi, hw, k0, n_acc, n, z), codegen


def _expf_ir(builder, x):
    """kernels._expf on a vector, operation for operation (Cephes' float32 polynomial; no fused
    multiply-adds, as Numba compiles the scalar version), so the same bits."""
    vt = x.type
    n_lanes = vt.count

    def c(v):
        return ir.Constant(vt, [v] * n_lanes)

    floor = c(EXPF_FLOOR)
    x = builder.select(builder.fcmp_ordered(">", x, floor), x, floor)
    n = builder.fptosi(builder.fsub(builder.fmul(x, c(EXPF_LOG2E)), c(0.5)), ir.VectorType(I32, n_lanes))
    fn = builder.sitofp(n, vt)
    r = builder.fsub(x, builder.fmul(fn, c(EXPF_LN2_HI)))
    r = builder.fsub(r, builder.fmul(fn, c(EXPF_LN2_LO)))
    p = c(EXPF_POLY[0])
    for coef in EXPF_POLY[1:]:
        p = builder.fadd(builder.fmul(p, r), c(coef))
    p = builder.fadd(builder.fadd(builder.fmul(p, builder.fmul(r, r)), r), c(1.0))
    vi = ir.VectorType(I32, n_lanes)
    scale = builder.bitcast(builder.shl(builder.add(n, ir.Constant(vi, [127] * n_lanes)),
                                        ir.Constant(vi, [23] * n_lanes)), vt)
    return builder.fmul(p, scale)


@intrinsic
def tile_softmax_draws(typingctx, z, bv_i, u, chosen):
    """For each lane r < LANES, one categorical draw from softmax_k(bv_i[k] + z[k, r]): the first level
    k < K - 1 whose cumulative probability e_0 / total + ... + e_k / total exceeds u[r], else K - 1
    (csrc/kernel_math.cuh softmax_numerators and categorical, the operations of kernels._expf and
    the running max, sum and cumulative sum in the order k = 0, 1, ...).  z float32[K, LANES] is
    overwritten with the exponentials; chosen int32[LANES].  All lanes are computed."""
    if not (is_array(z, 2, types.float32) and is_array(bv_i, 1, types.float32)
            and is_array(u, 1, types.float32) and is_array(chosen, 1, types.int32)):
        return None

    def codegen(context, builder, sig, args):
        z_a = context.make_array(sig.args[0])(context, builder, args[0])
        b_a = context.make_array(sig.args[1])(context, builder, args[1])
        u_a = context.make_array(sig.args[2])(context, builder, args[2])
        c_a = context.make_array(sig.args[3])(context, builder, args[3])
        n_levels, stride = cgutils.unpack_tuple(builder, z_a.shape, 2)
        zero = ir.Constant(_VF, None)

        def level_ptr(k):
            return _vector_at(builder, z_a.data, builder.mul(k, stride))

        def add_bias(k, values):
            ptr = level_ptr(k)
            bias = builder.load(builder.gep(b_a.data, [k]), align=4)
            zk = builder.fadd(splat(builder, _VF, bias), builder.load(ptr, align=4))
            builder.store(zk, ptr, align=4)
            (top,) = values
            return [builder.select(builder.fcmp_ordered(">", top, zk), top, zk)]

        minus_inf = ir.Constant(_VF, [float("-inf")] * LANES)  # max(-inf, z[0]) is z[0]: the running max starts there
        (top,) = counted_loop(builder, "softmax.max", ir_const(0), n_levels, [minus_inf], add_bias)

        def exponentials(k, values):
            ptr = level_ptr(k)
            e = _expf_ir(builder, builder.fsub(builder.load(ptr, align=4), top))
            builder.store(e, ptr, align=4)
            return [builder.fadd(values[0], e)]

        (total,) = counted_loop(builder, "softmax.exp", ir_const(0), n_levels, [zero], exponentials)
        uv = builder.load(_vector_at(builder, u_a.data, ir_const(0)), align=4)

        def cumulate(k, values):
            cum, count = values
            cum = builder.fadd(cum, builder.fdiv(builder.load(level_ptr(k), align=4), total))
            return [cum, builder.add(count, builder.zext(builder.fcmp_ordered("<=", cum, uv), _VI))]

        _, count = counted_loop(builder, "softmax.draw", ir_const(0), builder.sub(n_levels, ir_const(1)),
                              [zero, ir.Constant(_VI, None)], cumulate)
        builder.store(count, builder.bitcast(c_a.data, _VI.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.void(z, bv_i, u, chosen), codegen
