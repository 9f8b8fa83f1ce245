"""Compiled (numba) inference kernels: one call runs a whole network.

A network is compiled by ``predictor.plan`` into two flat arrays, so that one
call from Python, with two array arguments, runs every layer — no Python loop
over layers, no allocation, and the least dispatch overhead numba allows:

- ``ints`` (int32): a header, one 12-field record per operation, then the
  sparse index arrays of all layers;
- ``arena`` (float32): the weights and biases of all layers, then the
  activations of every node (each region padded with zeros to a multiple of the
  SIMD group so that block-sparse loads never read past a region).

Record fields: 0 opcode, 1 out offset, 2 out width, 3 in0 offset, 4 in0 width,
5 in1 offset, 6 storage kind (dense) / slice count (sum_slices), 7 weight
offset, 8 index offset, 9 bias offset, 10 fused ReLU, 11 group size (block) or
rows in order (sell: 8 outputs per vector store).
Activation offsets are relative to the activation base (``ints[1]``), so the same
records drive the batched kernel, whose activations are a (features, batch)
matrix with the batch contiguous (the inner loop of every kernel).
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from mittd.predictor.formats import (
    DCOL_LANES,
    KIND_BLOCK,
    KIND_CSC,
    KIND_CSR,
    KIND_DCOL,
    KIND_DENSE,
    KIND_SELL,
    SELL_LANES,
    dcol_width,
)

HEADER = 4  # n_ops, activation base, input offset, output offset
RECORD = 12
OP_COPY, OP_SUM_SLICES, OP_DENSE, OP_ADD, OP_SUB, OP_RELU = 1, 2, 3, 4, 5, 6

#: Whether this CPU gathers in hardware (AVX2 ``vgatherdps``). Numba's cache is keyed
#: on the CPU, so a kernel built here is never loaded on a CPU without it.
HAVE_AVX2 = bool(llvm.get_host_cpu_features().get("avx2", False))

_JIT = {"cache": True, "fastmath": True, "nogil": True, "boundscheck": False}


@numba.njit(**_JIT)
def _dense_rows(wv: np.ndarray, bv: np.ndarray, xv: np.ndarray, yv: np.ndarray,
                relu: int) -> None:  # pragma: no cover - compiled
    # Four rows at a time: each input value loaded once feeds four vectorised
    # dot products (the loop is memory-bound otherwise).
    n_in = xv.size
    n_out = yv.size
    j = 0
    while j + 4 <= n_out:
        r0 = wv[j * n_in:(j + 1) * n_in]
        r1 = wv[(j + 1) * n_in:(j + 2) * n_in]
        r2 = wv[(j + 2) * n_in:(j + 3) * n_in]
        r3 = wv[(j + 3) * n_in:(j + 4) * n_in]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for i in range(n_in):
            x = xv[i]
            a0 += r0[i] * x
            a1 += r1[i] * x
            a2 += r2[i] * x
            a3 += r3[i] * x
        a0 += bv[j]
        a1 += bv[j + 1]
        a2 += bv[j + 2]
        a3 += bv[j + 3]
        if relu:
            a0 = max(a0, np.float32(0.0))
            a1 = max(a1, np.float32(0.0))
            a2 = max(a2, np.float32(0.0))
            a3 = max(a3, np.float32(0.0))
        yv[j] = a0
        yv[j + 1] = a1
        yv[j + 2] = a2
        yv[j + 3] = a3
        j += 4
    while j < n_out:
        row = wv[j * n_in:(j + 1) * n_in]
        acc = np.float32(0.0)
        for i in range(n_in):
            acc += row[i] * xv[i]
        acc += bv[j]
        yv[j] = acc if (acc > 0.0 or not relu) else np.float32(0.0)
        j += 1


@numba.njit(**_JIT)
def _csr_rows(vals: np.ndarray, ptr: np.ndarray, cols: np.ndarray, bv: np.ndarray,
              xv: np.ndarray, yv: np.ndarray, relu: int) -> None:  # pragma: no cover
    # Four independent accumulators: a single one makes every multiply-add wait
    # for the previous (latency-bound at ~4 cycles per non-zero).
    for j in range(yv.size):
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        k = ptr[j]
        end = ptr[j + 1]
        while k + 4 <= end:
            a0 += vals[k] * xv[cols[k]]
            a1 += vals[k + 1] * xv[cols[k + 1]]
            a2 += vals[k + 2] * xv[cols[k + 2]]
            a3 += vals[k + 3] * xv[cols[k + 3]]
            k += 4
        while k < end:
            a0 += vals[k] * xv[cols[k]]
            k += 1
        acc = (a0 + a1) + (a2 + a3) + bv[j]
        yv[j] = acc if (acc > 0.0 or not relu) else np.float32(0.0)


@numba.njit(**_JIT)
def _block_rows(vals: np.ndarray, ptr: np.ndarray, starts: np.ndarray, bv: np.ndarray,
                xv: np.ndarray, yv: np.ndarray, relu: int, g: int) -> None:  # pragma: no cover
    for j in range(yv.size):
        if g == 8:
            # eight lanes kept apart across the row's groups: one SIMD multiply-add
            # per group, one horizontal sum per row
            a0 = np.float32(0.0)
            a1 = np.float32(0.0)
            a2 = np.float32(0.0)
            a3 = np.float32(0.0)
            a4 = np.float32(0.0)
            a5 = np.float32(0.0)
            a6 = np.float32(0.0)
            a7 = np.float32(0.0)
            for q in range(ptr[j], ptr[j + 1]):
                o = q * 8
                s = starts[q]
                a0 += vals[o] * xv[s]
                a1 += vals[o + 1] * xv[s + 1]
                a2 += vals[o + 2] * xv[s + 2]
                a3 += vals[o + 3] * xv[s + 3]
                a4 += vals[o + 4] * xv[s + 4]
                a5 += vals[o + 5] * xv[s + 5]
                a6 += vals[o + 6] * xv[s + 6]
                a7 += vals[o + 7] * xv[s + 7]
            acc = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
        else:
            acc = np.float32(0.0)
            for q in range(ptr[j], ptr[j + 1]):
                wq = vals[q * g:q * g + g]
                xq = xv[starts[q]:starts[q] + g]
                for k in range(g):
                    acc += wq[k] * xq[k]
        acc += bv[j]
        yv[j] = acc if (acc > 0.0 or not relu) else np.float32(0.0)


@intrinsic
def _nonzero8(typingctx, x, start):  # pragma: no cover - compiled
    """Bit ``l`` set where ``x[start + l] != 0`` (NaN counts), for ``l < 8``: one vector
    load, compare and ``movmskps``. Reads 8 floats from ``start`` whatever ``x``'s
    length: the caller's region must hold them (the plan pads every region to 16)."""
    sig = types.int64(x, start)

    def codegen(context, builder, signature, args):
        f32, i64 = ir.FloatType(), ir.IntType(64)
        v8f = ir.VectorType(f32, SELL_LANES)
        xd = context.make_array(signature.args[0])(context, builder, args[0]).data
        st = context.cast(builder, args[1], signature.args[1], types.int64)
        v = builder.load(builder.bitcast(builder.gep(xd, [st]), v8f.as_pointer()), align=4)
        nz = builder.fcmp_unordered("!=", v, ir.Constant(v8f, [0.0] * SELL_LANES))
        return builder.zext(builder.bitcast(nz, ir.IntType(SELL_LANES)), i64)

    return sig, codegen


@intrinsic
def _lowest_bit(typingctx, m):  # pragma: no cover - compiled
    """The index of the lowest set bit of ``m`` (``m != 0``): one ``tzcnt``."""
    sig = types.int64(m)

    def codegen(context, builder, signature, args):
        i64, i1 = ir.IntType(64), ir.IntType(1)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64, i1]),
                                            "llvm.cttz.i64")
        v = context.cast(builder, args[0], signature.args[0], types.int64)
        return builder.call(fn, [v, ir.Constant(i1, 1)])

    return sig, codegen


_dcol_width = numba.njit(cache=True)(dcol_width)  # the plan's padding, inside run1


def _relu_store(builder, a, relu_on, dst):  # type: ignore[no-untyped-def]
    """IR: store vector ``a`` at ``dst``, ReLU'd (lane by lane) when ``relu_on`` (i1):
    the end of a SELL chunk and of a dcol pass."""
    zero = ir.Constant(a.type, [0.0] * a.type.count)
    clipped = builder.select(builder.fcmp_ordered(">", a, zero), a, zero)
    builder.store(builder.select(relu_on, clipped, a),
                  builder.bitcast(dst, a.type.as_pointer()), align=4)


@intrinsic
def _dcol_layer(typingctx, w, x, n_in, bias, y, relu):  # pragma: no cover - compiled
    """A dcol layer (``formats`` ``dcol``): ``y = bias + sum over non-zero x[i] of
    x[i] * column i``, ReLU'd when ``relu``, 32 outputs per pass.

    Why by hand: the sums of a pass stay in 4 vector registers while the non-zero
    inputs stream by (found 8 at a time by a vector compare's bit mask); numba's
    loops keep them in memory, and each input's store-then-load of the outputs
    made the same loop ~10x slower. ``y``, ``bias`` and each column hold whole
    passes (the plan pads them); only ``x[:n_in]`` is read for values, its bit
    masks past ``n_in`` cleared (an input may be a slice of a wider region)."""
    sig = types.void(w, x, n_in, bias, y, relu)

    def codegen(context, builder, signature, args):
        f32, i64, i8, i32 = ir.FloatType(), ir.IntType(64), ir.IntType(8), ir.IntType(32)
        lanes = DCOL_LANES
        vp, v8 = ir.VectorType(f32, lanes), ir.VectorType(f32, SELL_LANES)
        arr = [context.make_array(signature.args[k])(context, builder, args[k]).data
               for k in (0, 1, 3, 4)]
        wd, xd, bd, yd = arr
        n = context.cast(builder, args[2], signature.args[2], types.int64)
        relu_on = builder.icmp_signed("!=", context.cast(
            builder, args[5], signature.args[5], types.int64), ir.Constant(i64, 0))
        out_w = context.cast(builder, context.make_array(signature.args[3])(
            context, builder, args[3]).nitems, types.intp, types.int64)  # whole passes
        passes = builder.sdiv(out_w, ir.Constant(i64, lanes))
        groups = builder.sdiv(builder.add(n, ir.Constant(i64, SELL_LANES - 1)),
                              ir.Constant(i64, SELL_LANES))
        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vp, [vp, vp, vp]), f"llvm.fmuladd.v{lanes}f32")
        cttz = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [i64, ir.IntType(1)]), "llvm.cttz.i64")
        zero8 = ir.Constant(v8, [0.0] * SELL_LANES)
        acc = cgutils.alloca_once(builder, vp)
        mask = cgutils.alloca_once(builder, i64)
        with cgutils.for_range(builder, passes) as pl:
            p0 = builder.mul(pl.index, ir.Constant(i64, lanes))
            builder.store(builder.load(builder.bitcast(builder.gep(bd, [p0]), vp.as_pointer()),
                                       align=4), acc)
            with cgutils.for_range(builder, groups) as gl:
                g0 = builder.mul(gl.index, ir.Constant(i64, SELL_LANES))
                xv = builder.load(builder.bitcast(builder.gep(xd, [g0]), v8.as_pointer()),
                                  align=4)
                nz = builder.fcmp_unordered("!=", xv, zero8)
                m = builder.zext(builder.bitcast(nz, i8), i64)
                left = builder.sub(n, g0)  # inputs left from g0: clear the bits past n_in
                keep = builder.select(
                    builder.icmp_signed("<", left, ir.Constant(i64, SELL_LANES)),
                    builder.sub(builder.shl(ir.Constant(i64, 1), left), ir.Constant(i64, 1)),
                    ir.Constant(i64, 0xFF))
                builder.store(builder.and_(m, keep), mask)
                head = builder.append_basic_block("dcol.bits")
                body = builder.append_basic_block("dcol.bit")
                done = builder.append_basic_block("dcol.bits.end")
                builder.branch(head)
                builder.position_at_end(head)
                mv = builder.load(mask)
                builder.cbranch(builder.icmp_unsigned("!=", mv, ir.Constant(i64, 0)), body, done)
                builder.position_at_end(body)
                i = builder.add(g0, builder.call(cttz, [mv, ir.Constant(ir.IntType(1), 1)]))
                builder.store(builder.and_(mv, builder.sub(mv, ir.Constant(i64, 1))), mask)
                xi = builder.load(builder.gep(xd, [i]))
                splat = builder.insert_element(ir.Constant(vp, None), xi, ir.Constant(i32, 0))
                splat = builder.shuffle_vector(splat, ir.Constant(vp, None),
                                               ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))
                col = builder.add(builder.mul(i, out_w), p0)
                wv = builder.load(builder.bitcast(builder.gep(wd, [col]), vp.as_pointer()),
                                  align=4)
                builder.store(builder.call(fmuladd, [wv, splat, builder.load(acc)]), acc)
                builder.branch(head)
                builder.position_at_end(done)
            _relu_store(builder, builder.load(acc), relu_on, builder.gep(yd, [p0]))
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(**_JIT)
def _csc_cols(vals: np.ndarray, ptr: np.ndarray, rows: np.ndarray, bv: np.ndarray,
              xv: np.ndarray, yv: np.ndarray, relu: int) -> None:  # pragma: no cover
    # The non-zero inputs are found 8 at a time (a vector compare's bit mask, then
    # its set bits): a branch per input mispredicts on every other one of a ReLU'd
    # layer and on most of the sparse LBA bits, and cost more than the scatter.
    for j in range(yv.size):
        yv[j] = bv[j]
    for base in range(0, xv.size, SELL_LANES):
        m = _nonzero8(xv, base)
        while m != 0:
            i = base + _lowest_bit(m)
            m &= m - 1
            if i < xv.size:  # the padding past the end is zero; this keeps it so anyway
                v = xv[i]
                for k in range(ptr[i], ptr[i + 1]):
                    yv[rows[k]] += vals[k] * v
    if relu:
        for j in range(yv.size):
            if yv[j] < 0.0:
                yv[j] = 0.0


def _sell_sums(context, builder, sig_args, args):  # type: ignore[no-untyped-def]
    """IR of one SELL chunk's 8 row sums as a vector (the loop both intrinsics share)."""
    va, ca, xa, st, cnt = args[:5]
    st = context.cast(builder, st, sig_args[3], types.int64)
    cnt = context.cast(builder, cnt, sig_args[4], types.int64)
    f32, i32, i8, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(8), ir.IntType(64)
    i16 = ir.IntType(16)
    lanes = SELL_LANES
    v8f, v8i, v8s = (ir.VectorType(f32, lanes), ir.VectorType(i32, lanes),
                     ir.VectorType(i16, lanes))
    vd = context.make_array(sig_args[0])(context, builder, va).data
    # the column ids are uint16, two to an int32 of ``cols`` (formats._encode_sell)
    cd = builder.bitcast(context.make_array(sig_args[1])(context, builder, ca).data,
                         i16.as_pointer())
    xd = context.make_array(sig_args[2])(context, builder, xa).data
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(v8f, [v8f, v8f, v8f]), "llvm.fma.v8f32")
    acc = cgutils.alloca_once_value(builder, ir.Constant(v8f, [0.0] * lanes))
    base = builder.mul(st, ir.Constant(i64, lanes))
    with cgutils.for_range(builder, cnt) as loop:
        off = builder.add(base, builder.mul(loop.index, ir.Constant(i64, lanes)))
        v = builder.load(builder.bitcast(builder.gep(vd, [off]), v8f.as_pointer()), align=4)
        c = builder.zext(builder.load(builder.bitcast(builder.gep(cd, [off]),
                                                      v8s.as_pointer()), align=2), v8i)
        if HAVE_AVX2:
            gather = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v8f, [v8f, i8.as_pointer(), v8i, v8f, i8]),
                "llvm.x86.avx2.gather.d.ps.256")
            mask = builder.bitcast(ir.Constant(v8i, [-1] * lanes), v8f)
            g = builder.call(gather, [ir.Constant(v8f, None),
                                      builder.bitcast(xd, i8.as_pointer()), c, mask,
                                      ir.Constant(i8, 4)])
        else:
            g = ir.Constant(v8f, None)
            for lane in range(lanes):
                ix = builder.extract_element(c, ir.Constant(i32, lane))
                xv = builder.load(builder.gep(xd, [builder.sext(ix, i64)]))
                g = builder.insert_element(g, xv, ir.Constant(i32, lane))
        builder.store(builder.call(fma, [v, g, builder.load(acc)]), acc)
    return builder.load(acc)


@intrinsic
def _sell_chunk(typingctx, vals, cols, x, start, count):  # pragma: no cover - compiled
    """The 8 row sums of one SELL chunk: ``sum_k vals[8(start+k) + l] * x[cols[...]]``.

    Why by hand: numba's code generator builds a gather from 8 scalar loads and
    inserts (1.4–1.9x slower in the prototype). With AVX2 each slice is one vector
    load of values, one of column ids, one ``vgatherdps`` and one FMA; without it
    (chosen when the kernel is built, :data:`HAVE_AVX2`) the same loop runs on
    scalar loads, which LLVM still turns into vector multiply-adds."""
    sig = types.UniTuple(types.float32, SELL_LANES)(vals, cols, x, start, count)

    def codegen(context, builder, signature, args):
        a = _sell_sums(context, builder, signature.args, args)
        i32 = ir.IntType(32)
        return context.make_tuple(builder, signature.return_type,
                                  [builder.extract_element(a, ir.Constant(i32, i))
                                   for i in range(SELL_LANES)])

    return sig, codegen


@intrinsic
def _sell_chunk_store(typingctx, vals, cols, x, start, count, bias, y, row0,
                      relu):  # pragma: no cover - compiled
    """One SELL chunk whose rows are in order (``plan.relabel_units``): its 8 sums
    plus ``bias[row0:row0+8]``, ReLU'd when ``relu``, stored to ``y[row0:row0+8]``
    in one vector store (bias and ``y`` hold 8 floats there: the plan pads both)."""
    sig = types.void(vals, cols, x, start, count, bias, y, row0, relu)

    def codegen(context, builder, signature, args):
        a = _sell_sums(context, builder, signature.args, args)
        f32, i64 = ir.FloatType(), ir.IntType(64)
        v8f = ir.VectorType(f32, SELL_LANES)
        r0 = context.cast(builder, args[7], signature.args[7], types.int64)
        bd = context.make_array(signature.args[5])(context, builder, args[5]).data
        yd = context.make_array(signature.args[6])(context, builder, args[6]).data
        bv = builder.load(builder.bitcast(builder.gep(bd, [r0]), v8f.as_pointer()), align=4)
        a = builder.fadd(a, bv)
        relu_on = builder.icmp_signed("!=", context.cast(
            builder, args[8], signature.args[8], types.int64), ir.Constant(i64, 0))
        _relu_store(builder, a, relu_on, builder.gep(yd, [r0]))
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(**_JIT)
def _sell_rows(vals: np.ndarray, ptr: np.ndarray, perm: np.ndarray, cols: np.ndarray,
               bv: np.ndarray, xv: np.ndarray, yv: np.ndarray, relu: int,
               in_order: int) -> None:  # pragma: no cover - compiled
    if in_order:  # rows already sorted: 8 outputs per vector store (yv, bv padded to 8)
        for c in range(ptr.size - 1):
            s = ptr[c]
            _sell_chunk_store(vals, cols, xv, s, ptr[c + 1] - s, bv, yv, c * SELL_LANES, relu)
        return
    for c in range(ptr.size - 1):
        s = ptr[c]
        t = _sell_chunk(vals, cols, xv, s, ptr[c + 1] - s)
        p0 = c * SELL_LANES
        for lane in range(SELL_LANES):
            r = perm[p0 + lane]
            if r >= 0:
                acc = t[lane] + bv[r]
                yv[r] = acc if (acc > 0.0 or not relu) else np.float32(0.0)


@numba.njit(**_JIT)
def run1(ints: np.ndarray, arena: np.ndarray) -> None:  # pragma: no cover - compiled
    """Run the network once on the input region of ``arena`` (batch of one).

    Inner loops work on slice views: indexing the one arena twice in a loop makes
    LLVM assume aliasing and give up vectorising (10x slower).
    """
    base = np.int64(ints[1])
    for r in range(ints[0]):
        p = HEADER + r * RECORD
        op = ints[p]
        out = base + ints[p + 1]
        ow = np.int64(ints[p + 2])
        a = base + ints[p + 3]
        aw = np.int64(ints[p + 4])
        yv = arena[out:out + ow]
        xv = arena[a:a + aw]
        if op == OP_DENSE:
            kind = ints[p + 6]
            w = np.int64(ints[p + 7])
            ix = np.int64(ints[p + 8])
            bv = arena[ints[p + 9]:ints[p + 9] + ow]
            relu = ints[p + 10]
            if kind == KIND_DENSE:
                _dense_rows(arena[w:w + ow * aw], bv, xv, yv, relu)
            elif kind == KIND_CSR:
                ptr = ints[ix:ix + ow + 1]
                nnz = ptr[ow]
                _csr_rows(arena[w:w + nnz], ptr, ints[ix + ow + 1:ix + ow + 1 + nnz], bv,
                          xv, yv, relu)
            elif kind == KIND_BLOCK:
                g = np.int64(ints[p + 11])
                ptr = ints[ix:ix + ow + 1]
                ng = ptr[ow]
                # blocks may read up to g - 1 floats past the input (zero padding)
                _block_rows(arena[w:w + ng * g], ptr, ints[ix + ow + 1:ix + ow + 1 + ng], bv,
                            arena[a:a + aw + g], yv, relu, g)
            elif kind == KIND_SELL:
                nch = (ow + SELL_LANES - 1) // SELL_LANES
                ptr = ints[ix:ix + nch + 1]
                pm = ix + nch + 1
                cv = pm + nch * SELL_LANES
                ns = np.int64(ptr[nch]) * SELL_LANES
                rows8 = nch * SELL_LANES  # padded: the plan leaves room for 8 per chunk
                _sell_rows(arena[w:w + ns], ptr, ints[pm:cv], ints[cv:cv + ns // 2],
                           arena[ints[p + 9]:ints[p + 9] + rows8], xv,
                           arena[out:out + rows8], relu, ints[p + 11])
            elif kind == KIND_DCOL:
                ow32 = _dcol_width(ow)
                _dcol_layer(arena[w:w + aw * ow32], xv, aw, arena[ints[p + 9]:ints[p + 9] + ow32],
                            arena[out:out + ow32], relu)
            else:  # KIND_CSC: skip zero input activations (EIE's broadcast of non-zeros)
                ptr = ints[ix:ix + aw + 1]
                nnz = ptr[aw]
                _csc_cols(arena[w:w + nnz], ptr, ints[ix + aw + 1:ix + aw + 1 + nnz], bv,
                          xv, yv, relu)
        elif op == OP_ADD:
            cv = arena[base + ints[p + 5]:base + ints[p + 5] + ow]
            for j in range(ow):
                yv[j] = xv[j] + cv[j]
        elif op == OP_SUB:
            cv = arena[base + ints[p + 5]:base + ints[p + 5] + ow]
            for j in range(ow):
                yv[j] = xv[j] - cv[j]
        elif op == OP_RELU:
            for j in range(ow):
                v = xv[j]
                yv[j] = v if v > 0.0 else np.float32(0.0)
        elif op == OP_COPY:
            for j in range(ow):
                yv[j] = xv[j]
        else:  # OP_SUM_SLICES
            count = ints[p + 6]
            for j in range(ow):
                yv[j] = xv[j]
            for s in range(1, count):
                sv = xv[s * ow:(s + 1) * ow]
                for j in range(ow):
                    yv[j] += sv[j]


@numba.njit(**_JIT)
def run_many(ints: np.ndarray, arena: np.ndarray, input_at: int, inputs: np.ndarray,
             n: int) -> None:  # pragma: no cover - compiled
    """``run1`` ``n`` times, cycling through ``inputs`` (rows): timing without the
    Python call per decision, whose noise would drown a plan's small lead."""
    d = inputs.shape[1]
    for r in range(n):
        arena[input_at:input_at + d] = inputs[r % inputs.shape[0]]
        run1(ints, arena)


@numba.njit(**_JIT)
def run_batch(ints: np.ndarray, arena: np.ndarray,
              act: np.ndarray) -> None:  # pragma: no cover - compiled
    """Run the network on a batch: ``act`` is (activation rows, batch), the input
    rows already filled; weights come from ``arena``."""
    n = act.shape[1]
    for r in range(ints[0]):
        p = HEADER + r * RECORD
        op = ints[p]
        out = ints[p + 1]
        ow = ints[p + 2]
        a = ints[p + 3]
        aw = ints[p + 4]
        if op == OP_DENSE:
            kind = ints[p + 6]
            w = ints[p + 7]
            ix = ints[p + 8]
            b = ints[p + 9]
            relu = ints[p + 10]
            if kind == KIND_CSC:
                rows = ix + aw + 1
                for j in range(ow):
                    bj = arena[b + j]
                    for t in range(n):
                        act[out + j, t] = bj
                for i in range(aw):
                    for k in range(ints[ix + i], ints[ix + i + 1]):
                        wk = arena[w + k]
                        rj = out + ints[rows + k]
                        for t in range(n):
                            act[rj, t] += wk * act[a + i, t]
                if relu:
                    for j in range(ow):
                        for t in range(n):
                            if act[out + j, t] < 0.0:
                                act[out + j, t] = 0.0
                continue
            if kind == KIND_DENSE:  # a matrix product: BLAS does it best
                yv = act[out:out + ow]
                np.dot(arena[w:w + ow * aw].reshape(ow, aw), act[a:a + aw], yv)
                for j in range(ow):
                    bj = arena[b + j]
                    row = yv[j]
                    for t in range(n):
                        v = row[t] + bj
                        row[t] = v if (v > 0.0 or not relu) else np.float32(0.0)
                continue
            for j in range(ow):
                bj = arena[b + j]
                for t in range(n):
                    act[out + j, t] = bj
                if kind == KIND_CSR:
                    cols = ix + ow + 1
                    for k in range(ints[ix + j], ints[ix + j + 1]):
                        wk = arena[w + k]
                        ci = a + ints[cols + k]
                        for t in range(n):
                            act[out + j, t] += wk * act[ci, t]
                else:  # KIND_BLOCK
                    g = ints[p + 11]
                    starts = ix + ow + 1
                    for q in range(ints[ix + j], ints[ix + j + 1]):
                        c = a + ints[starts + q]
                        d = w + q * g
                        for k in range(g):
                            wk = arena[d + k]
                            for t in range(n):
                                act[out + j, t] += wk * act[c + k, t]
                if relu:
                    for t in range(n):
                        if act[out + j, t] < 0.0:
                            act[out + j, t] = 0.0
        elif op == OP_ADD:
            c = ints[p + 5]
            for j in range(ow):
                for t in range(n):
                    act[out + j, t] = act[a + j, t] + act[c + j, t]
        elif op == OP_SUB:
            c = ints[p + 5]
            for j in range(ow):
                for t in range(n):
                    act[out + j, t] = act[a + j, t] - act[c + j, t]
        elif op == OP_RELU:
            for j in range(ow):
                for t in range(n):
                    v = act[a + j, t]
                    act[out + j, t] = v if v > 0.0 else 0.0
        elif op == OP_COPY:
            for j in range(ow):
                for t in range(n):
                    act[out + j, t] = act[a + j, t]
        else:  # OP_SUM_SLICES
            count = ints[p + 6]
            for j in range(ow):
                for t in range(n):
                    acc = act[a + j, t]
                    for s in range(1, count):
                        acc += act[a + s * ow + j, t]
                    act[out + j, t] = acc
