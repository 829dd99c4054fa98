//! Every `unsafe` line of mawqif lives here: the CPU-feature proofs, the
//! AVX-512 kernels, the f32 `gemm` call, and the one way parallel tasks
//! write into a shared buffer (disjoint blocks, checked before any task
//! runs). Everything outside this module is safe code calling safe wrappers.
#![allow(unsafe_code)]

use std::marker::PhantomData;

use rayon::prelude::*;

/// f32 → bf16 bits, rounding to nearest even (as PyTorch and oneDNN do).
#[inline(always)]
pub(super) fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1))) >> 16;
    // A select, not a branch, so that loops over it vectorize.
    if x.is_nan() {
        0x7fc0
    } else {
        rounded
    }
}

/// e^x as 2^n · P(r), |r| ≤ ln2/2 (Cephes' expf): the input range, ln 2
/// split in two parts for an exact range reduction, and P's coefficients
/// from the highest power down. Shared by `math::exp` and the attention
/// kernel's vector exp, so that the two compute the same function.
pub(super) const EXP_LOWEST: f32 = -87.0;
pub(super) const EXP_HIGHEST: f32 = 88.0;
pub(super) const EXP_LN2_HIGH: f32 = 0.693_359_4;
pub(super) const EXP_LN2_LOW: f32 = 2.121_944_4e-4;
pub(super) const EXP_POLYNOMIAL: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5e-1,
];

/// Rows 6 × columns 64 per bf16 kernel step: 24 accumulators + 4 B vectors
/// + 1 broadcast fit the 32 AVX-512 registers.
pub(super) const MR: usize = 6;
pub(super) const NB: usize = 4;
pub(super) const LANES: usize = 16;
/// Pairs of k per slice of B that the bf16 kernel keeps in L1.
const KC: usize = 64;

/// Work done on each output row of a task's block once its product is
/// complete (the feed-forward activation), while the block is still in
/// cache, instead of in a separate pass over the whole output.
pub(super) type RowFinish<'f> = Option<&'f (dyn Fn(&mut [f32]) + Sync)>;

/// Proof that this CPU has AVX-512F and AVX-512 BF16: the only way to get
/// one is [`Avx512Bf16::detect`], so a bf16 kernel cannot be reached on a
/// CPU without the instructions.
#[derive(Debug, Clone, Copy)]
pub struct Avx512Bf16(());

impl Avx512Bf16 {
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            (std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bf16"))
            .then_some(Avx512Bf16(()))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    /// AVX-512 BF16 comes with AVX-512F.
    pub(super) fn avx512f(self) -> Avx512F {
        Avx512F(())
    }
}

/// Proof that this CPU has AMX tiles with BF16 and that Linux lets this
/// process use them (the permission is asked for once, for the process).
/// Where it exists, bf16 products run on the tiles: on the Intel machine
/// measured, `mawqif bench` went from 65–71 to 142–148 sentences/s
/// (README, "Speed and memory").
#[derive(Debug, Clone, Copy)]
pub struct Amx(());

impl Amx {
    pub fn detect() -> Option<Self> {
        static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        GRANTED.get_or_init(amx_granted).then_some(Amx(()))
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn amx_granted() -> bool {
    // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    let has_tiles = leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0;
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM only changes which state
    // components the kernel will save for this process; it fails (and
    // nothing changes) where the kernel or CPU lacks AMX.
    has_tiles
        && unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        } == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn amx_granted() -> bool {
    false
}

/// Proof that this CPU has AVX-512F (the attention kernels).
#[derive(Debug, Clone, Copy)]
pub struct Avx512F(());

impl Avx512F {
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f").then_some(Avx512F(()))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    /// Run `work` compiled for AVX-512F, so that the plain loops inlined
    /// into it (GELU, bf16 conversion, softmax, layer norm) vectorize 16
    /// lanes wide instead of the 4 of the x86-64 baseline. The arithmetic
    /// and its order are unchanged, so results are bit-identical.
    #[inline(always)]
    pub(super) fn run<R>(self, work: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            fn with_avx512f<R>(work: impl FnOnce() -> R) -> R {
                work()
            }
            // SAFETY: `self` exists only where the CPU has AVX-512F.
            unsafe { with_avx512f(work) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            work()
        }
    }
}

/// `work` compiled for AVX-512F when `cpu` proves the CPU has it, else as
/// it is. Callers detect once, outside their parallel loops.
#[inline(always)]
pub(super) fn widest<R>(cpu: Option<Avx512F>, work: impl FnOnce() -> R) -> R {
    match cpu {
        Some(cpu) => cpu.run(work),
        None => work(),
    }
}

/// A `rows` × `cols` block of a row-major buffer, owned by one task.
pub(super) struct Block<'a> {
    ptr: *mut f32,
    stride: usize,
    rows: usize,
    cols: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: a Block is the only handle to its elements (par_blocks checks that
// blocks are disjoint), so moving it to another thread is like moving a
// `&mut [f32]`.
unsafe impl Send for Block<'_> {}

impl Block<'_> {
    /// Row `i` of the block (`cols` values).
    pub(super) fn row(&mut self, i: usize) -> &mut [f32] {
        assert!(
            i < self.rows,
            "row {i} outside a block of {} rows",
            self.rows
        );
        // SAFETY: rows < self.rows lie inside the buffer (checked in
        // par_blocks) and no other Block covers these elements.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.stride), self.cols) }
    }
}

/// The buffer's base pointer, carried into rayon closures.
struct BasePtr(*mut f32);
// SAFETY: only used to derive disjoint Blocks (see par_blocks).
unsafe impl Sync for BasePtr {}

impl BasePtr {
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Run `task(band, strip, block)` in parallel for every band × strip of a
/// row-major `buf` with rows `stride` long. `bands` are `(first row, rows)`,
/// ascending and non-overlapping; strips are `strip` columns wide (the last
/// one may be narrower). The blocks are disjoint, so the tasks never write
/// the same element.
pub(super) fn par_blocks<F>(
    buf: &mut [f32],
    stride: usize,
    bands: &[(usize, usize)],
    strip: usize,
    task: F,
) where
    F: Fn(usize, usize, Block<'_>) + Sync,
{
    assert!(stride > 0 && strip > 0, "empty rows or strips");
    let total_rows = buf.len() / stride;
    let mut next_free = 0;
    for &(first, rows) in bands {
        assert!(first >= next_free, "bands overlap or are out of order");
        next_free = first + rows;
        assert!(next_free <= total_rows, "band beyond the buffer");
    }
    let strips = stride.div_ceil(strip);
    let base = BasePtr(buf.as_mut_ptr());
    (0..bands.len() * strips).into_par_iter().for_each(|t| {
        let (band, s) = (t / strips, t % strips);
        let (first, rows) = bands[band];
        let col0 = s * strip;
        let block = Block {
            ptr: base.at(first * stride + col0),
            stride,
            rows,
            cols: strip.min(stride - col0),
            _buffer: PhantomData,
        };
        task(band, s, block);
    });
}

/// `y[m × n] += x[m × k] · w[n × k]ᵀ` in f32 (y arrives holding the bias).
pub(super) fn gemm_f32(x: &[f32], w: &[f32], y: &mut [f32], m: usize, n: usize, k: usize) {
    assert!(x.len() >= m * k && w.len() >= n * k && y.len() >= m * n);
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && m * n * k > 1 << 18 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the strides describe x [m,k] and y [m,n] row-major and Wᵀ read
    // from w [n,k] row-major; the assert above covers every access.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            true,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// A read-only matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows` × `cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// Any strides; the view must lie inside `data`.
    pub fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * row_stride + (cols - 1) * col_stride;
            assert!(
                last < data.len(),
                "a {rows} × {cols} view does not fit {} values",
                data.len()
            );
        }
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// `C = A · B` (or `C += A · B` with `accumulate`) in f32, where C is a
/// row-major `m × n` block of `c` with rows `c_row_stride` apart.
pub fn matmul(c: &mut [f32], c_row_stride: usize, accumulate: bool, a: View<'_>, b: View<'_>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(n <= c_row_stride && (m - 1) * c_row_stride + n <= c.len());
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(c_row_stride).take(m) {
                row[..n].iter_mut().for_each(|v| *v = 0.0);
            }
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && m * n * k > 1 << 18 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the views were checked to lie inside their slices when made,
    // and C's `m` rows of `n` values `c_row_stride` apart inside `c` by the
    // assert above; `c` is borrowed mutably, so it overlaps neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Weights packed for the bf16 kernel: bf16 pairs along k, in groups of
/// `NB` panels of 16 output columns,
/// `data[((group * kp + pair) * NB + panel) * 16 + lane]`; the bias is
/// zero-padded to whole groups so masked loads stay inside it.
pub(super) struct PackedBf16 {
    pub(super) kp: usize,
    pub(super) groups: usize,
    pub(super) data: Vec<u32>,
    pub(super) bias: Vec<f32>,
    pub(super) cpu: Avx512Bf16,
    /// Set where the tiles can be used and `kp` is whole tiles of k.
    pub(super) amx: Option<Amx>,
}

/// Rows of A and C per AMX tile; a tile row is 64 bytes (16 pairs of k,
/// or 16 f32 of C).
const TILE_ROWS: usize = 16;
const TILE_PAIRS: usize = 16;

impl PackedBf16 {
    /// The AMX path needs k in whole tiles (every layer of the shipped
    /// encoders: k = 384, 768, 1536, 3072).
    pub(super) fn amx_for(kp: usize) -> Option<Amx> {
        Amx::detect().filter(|_| kp.is_multiple_of(TILE_PAIRS))
    }
}

/// Activations as bf16 pairs along k, `rows_padded` rows of `kp` pairs
/// (rows past the input's are zero), written into `scratch`: the caller
/// keeps it between layers, so it is allocated and zeroed once per batch
/// rather than once per product.
fn pack_activations<'s>(
    cpu: Avx512Bf16,
    x: &[f32],
    k: usize,
    kp: usize,
    rows_padded: usize,
    scratch: &'s mut Vec<u32>,
) -> &'s [u32] {
    let rows = x.len() / k;
    if scratch.len() < rows_padded * kp {
        scratch.resize(rows_padded * kp, 0);
    }
    let a = &mut scratch[..rows_padded * kp];
    a[rows * kp..].iter_mut().for_each(|v| *v = 0);
    let wide = cpu.avx512f();
    a.par_chunks_mut(kp)
        .zip(x.par_chunks(k))
        .for_each(|(dst, src)| {
            wide.run(|| {
                for (d, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
                    *d = bf16_bits(pair[0]) | (bf16_bits(pair[1]) << 16);
                }
                if !k.is_multiple_of(2) {
                    dst[kp - 1] = bf16_bits(src[k - 1]);
                }
            })
        });
    a
}

/// Bands of whole `rows_per_block`-row blocks, `blocks_per_band` blocks
/// each, so that small batches still spread over all threads.
fn bands_of(
    m: usize,
    rows_per_block: usize,
    groups: usize,
    max_blocks: usize,
) -> (usize, Vec<(usize, usize)>) {
    let blocks = m.div_ceil(rows_per_block);
    let threads = rayon::current_num_threads().max(1);
    let blocks_per_band = blocks
        .div_ceil((threads * 2).div_ceil(groups).max(1))
        .clamp(1, max_blocks);
    let bands = (0..blocks.div_ceil(blocks_per_band))
        .map(|band| {
            let first = band * blocks_per_band * rows_per_block;
            (
                first,
                (first + blocks_per_band * rows_per_block).min(m) - first,
            )
        })
        .collect();
    (blocks_per_band, bands)
}

/// Pairs of k per slice of B on the AMX path: a slice of one column group
/// (128 pairs × 64 columns = 32 KiB) stays in L1 while every 16-row block
/// of the task passes over it (streaming all of B from L2 for each block
/// instead measured about 10% slower end to end).
const AMX_KC: usize = 128;

/// `y[m × n] = bias + x[m × k] · Wᵀ` on AMX tiles, `a` being x packed by
/// [`pack_activations`]. Per task (a band of 16-row blocks × one
/// group of 4 panels), each block's four 16 × 16 f32 accumulators start
/// from the bias and live in `y` itself between slices of k, so there is
/// no separate accumulator to zero and no pass to add the bias.
fn matmul_amx(
    amx: Amx,
    w: &PackedBf16,
    a: &[u32],
    y: &mut [f32],
    m: usize,
    n: usize,
    finish: RowFinish<'_>,
) {
    let (kp, groups) = (w.kp, w.groups);
    assert!(kp.is_multiple_of(TILE_PAIRS) && AMX_KC.is_multiple_of(TILE_PAIRS));
    assert!(a.len() >= m.div_ceil(TILE_ROWS) * TILE_ROWS * kp);
    let (blocks_per_band, bands) = bands_of(m, TILE_ROWS, groups, 16);
    par_blocks(y, n, &bands, NB * LANES, |band, g, mut block| {
        let b = &w.data[g * kp * NB * LANES..(g + 1) * kp * NB * LANES];
        let bias = &w.bias[g * NB * LANES..(g + 1) * NB * LANES];
        let first_row = band * blocks_per_band * TILE_ROWS;
        let blocks = block.rows.div_ceil(TILE_ROWS);
        let a_band = &a[first_row * kp..][..blocks * TILE_ROWS * kp];
        amx_band(amx, a_band, kp, b, bias, &mut block);
        if let Some(finish) = finish {
            (0..block.rows).for_each(|i| finish(block.row(i)));
        }
    });
}

/// 16 rows × 64 f32, the C tiles of one block, for blocks that are not
/// whole inside `y` (the last rows, or a group narrower than 64 columns).
#[repr(C, align(64))]
struct SpareBlock([f32; TILE_ROWS * NB * LANES]);

/// `block = bias + A_band · B_group`: A_band is the block's rows of packed
/// activations (padded to whole 16-row blocks), B_group one group of
/// packed weights, `bias` that group's 64 (padded) biases.
fn amx_band(amx: Amx, a: &[u32], kp: usize, b: &[u32], bias: &[f32], block: &mut Block<'_>) {
    let _ = amx;
    let blocks = block.rows.div_ceil(TILE_ROWS);
    let whole = if block.cols == NB * LANES {
        block.rows / TILE_ROWS
    } else {
        0
    };
    assert!(kp.is_multiple_of(TILE_PAIRS) && b.len() >= kp * NB * LANES);
    assert!(a.len() >= blocks * TILE_ROWS * kp && bias.len() >= NB * LANES);
    assert!(block.cols <= NB * LANES);
    let mut spare = SpareBlock([0.0; TILE_ROWS * NB * LANES]);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `amx` proves the CPU has AMX-TILE and AMX-BF16 and that the
    // kernel saves tile state for this process. Tile loads read 16 rows of
    // 64 bytes inside `a` (a block's 16 rows of kp pairs, kp * 4 bytes
    // apart, pairs q..q + 16 with q + 16 <= kp) or `b` (pairs q..q + 16 of
    // one panel, rows NB * 64 bytes apart), or one row of 64 bytes of
    // `bias` repeated (stride 0). C tiles are loaded from and stored to
    // either a whole block inside this task's Block (blocks < `whole`: 16
    // of its rows, its 64 columns, rows `stride` apart) or `spare`. All
    // asserted above or by par_blocks. The tiles are configured, used and
    // released inside this call, on this thread, and no other code uses
    // them in between.
    unsafe {
        tiles_configure();
        let row_bytes = block.stride * 4;
        // Whole blocks: k in slices, so that each slice of B stays in L1
        // while every block passes over it.
        let mut q0 = 0;
        while q0 < kp {
            let q1 = (q0 + AMX_KC).min(kp);
            for i in 0..whole {
                let c = block.ptr.add(i * TILE_ROWS * block.stride);
                let (from, from_stride) = if q0 == 0 {
                    (bias.as_ptr(), 0)
                } else {
                    (c.cast_const(), row_bytes)
                };
                let a_block = a.as_ptr().add(i * TILE_ROWS * kp);
                amx_block_kernel(
                    a_block,
                    kp,
                    b.as_ptr(),
                    q0,
                    q1,
                    from,
                    from_stride,
                    c,
                    row_bytes,
                );
            }
            q0 = q1;
        }
        // The rest, all of k at once into `spare`, then copied.
        let spare_bytes = NB * LANES * 4;
        for i in whole..blocks {
            let a_block = a.as_ptr().add(i * TILE_ROWS * kp);
            let c = spare.0.as_mut_ptr();
            amx_block_kernel(
                a_block,
                kp,
                b.as_ptr(),
                0,
                kp,
                bias.as_ptr(),
                0,
                c,
                spare_bytes,
            );
            let rows = (block.rows - i * TILE_ROWS).min(TILE_ROWS);
            for r in 0..rows {
                let src = &spare.0[r * NB * LANES..][..block.cols];
                block.row(i * TILE_ROWS + r).copy_from_slice(src);
            }
        }
        tiles_release();
    };
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, kp, b, bias, blocks, whole, &mut spare);
        unreachable!("an Amx proof exists only on x86_64")
    }
}

/// The tile configuration: palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn all_16_by_64() -> Self {
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        for tile in 0..8 {
            cfg[16 + 2 * tile] = 64; // bytes per row, u16 little-endian
            cfg[48 + tile] = TILE_ROWS as u8;
        }
        TileConfig(cfg)
    }
}

#[cfg(target_arch = "x86_64")]
unsafe fn tiles_configure() {
    let cfg = TileConfig::all_16_by_64();
    std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
}

#[cfg(target_arch = "x86_64")]
unsafe fn tiles_release() {
    std::arch::asm!("tilerelease", options(nostack, nomem));
}

/// One 16-row block over pairs `q0..q1`, `a` being the block's first row
/// of activations (rows `kp` pairs apart): C tiles tmm0..tmm3 (one per
/// panel) are loaded from `from` (rows `from_stride` bytes apart: 0 to
/// start every row from the bias) and stored to `c` (rows `c_stride` bytes
/// apart); A is in tmm4, B in tmm5..tmm7.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn amx_block_kernel(
    a: *const u32,
    kp: usize,
    b: *const u32,
    q0: usize,
    q1: usize,
    from: *const f32,
    from_stride: usize,
    c: *mut f32,
    c_stride: usize,
) {
    use std::arch::asm;
    let a_stride = kp * 4;
    let b_stride = NB * LANES * 4;
    asm!(
        "tileloadd tmm0, [{c0} + {sc}*1]",
        "tileloadd tmm1, [{c1} + {sc}*1]",
        "tileloadd tmm2, [{c2} + {sc}*1]",
        "tileloadd tmm3, [{c3} + {sc}*1]",
        c0 = in(reg) from,
        c1 = in(reg) from.add(LANES),
        c2 = in(reg) from.add(2 * LANES),
        c3 = in(reg) from.add(3 * LANES),
        sc = in(reg) from_stride,
        options(nostack, readonly)
    );
    let mut q = q0;
    while q < q1 {
        let b_row = b.add(q * NB * LANES);
        asm!(
            "tileloadd tmm4, [{a} + {sa}*1]",
            "tileloadd tmm5, [{b0} + {sb}*1]",
            "tdpbf16ps tmm0, tmm4, tmm5",
            "tileloadd tmm6, [{b1} + {sb}*1]",
            "tdpbf16ps tmm1, tmm4, tmm6",
            "tileloadd tmm7, [{b2} + {sb}*1]",
            "tdpbf16ps tmm2, tmm4, tmm7",
            "tileloadd tmm5, [{b3} + {sb}*1]",
            "tdpbf16ps tmm3, tmm4, tmm5",
            a = in(reg) a.add(q),
            sa = in(reg) a_stride,
            b0 = in(reg) b_row,
            b1 = in(reg) b_row.add(LANES),
            b2 = in(reg) b_row.add(2 * LANES),
            b3 = in(reg) b_row.add(3 * LANES),
            sb = in(reg) b_stride,
            options(nostack, readonly)
        );
        q += TILE_PAIRS;
    }
    asm!(
        "tilestored [{c0} + {sc}*1], tmm0",
        "tilestored [{c1} + {sc}*1], tmm1",
        "tilestored [{c2} + {sc}*1], tmm2",
        "tilestored [{c3} + {sc}*1], tmm3",
        c0 = in(reg) c,
        c1 = in(reg) c.add(LANES),
        c2 = in(reg) c.add(2 * LANES),
        c3 = in(reg) c.add(3 * LANES),
        sc = in(reg) c_stride,
        options(nostack)
    );
}

/// `y[m × n] = bias + x[m × k] · Wᵀ` with bf16 inputs and f32 accumulation.
/// `y`'s old values are overwritten; `scratch` holds the packed activations;
/// `finish` runs on every output row once it is complete.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_bf16(
    w: &PackedBf16,
    x: &[f32],
    y: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    scratch: &mut Vec<u32>,
    finish: RowFinish<'_>,
) {
    let (kp, groups) = (w.kp, w.groups);
    assert!(kp == k.div_ceil(2) && groups == n.div_ceil(LANES * NB));
    assert!(w.data.len() == groups * kp * NB * LANES && w.bias.len() == groups * NB * LANES);
    assert!(x.len() == m * k && y.len() == m * n);
    if let Some(amx) = w.amx {
        let a = pack_activations(w.cpu, x, k, kp, m.div_ceil(TILE_ROWS) * TILE_ROWS, scratch);
        return matmul_amx(amx, w, a, y, m, n, finish);
    }
    // Activations as bf16 pairs, rows padded to whole kernel blocks.
    let a = pack_activations(w.cpu, x, k, kp, m.div_ceil(MR) * MR, scratch);
    // Tasks: column groups × runs of row blocks. 16 blocks = 96 rows of A
    // per task: with k up to 1536 that is at most 288 KiB, which stays in
    // L2 while the task's B slices pass.
    let (blocks_per_chunk, bands) = bands_of(m, MR, groups, 16);
    let cpu = w.cpu;
    par_blocks(y, n, &bands, NB * LANES, |band, g, mut block| {
        let b = &w.data[g * kp * NB * LANES..(g + 1) * kp * NB * LANES];
        let bias = &w.bias[g * NB * LANES..(g + 1) * NB * LANES];
        let first_block = band * blocks_per_chunk;
        let masks: [u16; NB] = std::array::from_fn(|j| {
            let valid = block.cols.saturating_sub(j * LANES).min(LANES);
            ((1u32 << valid) - 1) as u16
        });
        // The product one slice of k at a time: a slice of B (KC pairs × 64
        // columns = 16 KiB) stays in L1 while every row block of this task
        // passes over it. The first slice starts from the bias.
        let mut q0 = 0;
        while q0 < kp {
            let q1 = (q0 + KC).min(kp);
            let mut row = 0;
            while row < block.rows {
                let rows = (block.rows - row).min(MR);
                let a_block = &a[(first_block * MR + row) * kp..][..MR * kp];
                tile_bf16(
                    cpu,
                    a_block,
                    kp,
                    b,
                    q0,
                    q1,
                    (q0 == 0).then_some(bias),
                    &block,
                    row,
                    rows,
                    &masks,
                );
                row += MR;
            }
            q0 = q1;
        }
        if let Some(finish) = finish {
            (0..block.rows).for_each(|i| finish(block.row(i)));
        }
    });
}

/// One kernel step on rows `row..row + rows` of `block`.
#[allow(clippy::too_many_arguments)]
fn tile_bf16(
    cpu: Avx512Bf16,
    a: &[u32],
    kp: usize,
    b: &[u32],
    q0: usize,
    q1: usize,
    bias: Option<&[f32]>,
    block: &Block<'_>,
    row: usize,
    rows: usize,
    masks: &[u16; NB],
) {
    let _ = cpu;
    assert!(a.len() >= MR * kp && b.len() >= q1 * NB * LANES && q0 <= q1 && q1 <= kp);
    assert!(bias.is_none_or(|bias| bias.len() >= NB * LANES));
    assert!(row + rows <= block.rows && rows <= MR && block.cols <= NB * LANES);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `cpu` proves avx512f + avx512bf16. A holds MR rows of kp pairs,
    // B at least q1 pairs of NB panels, the bias NB panels; the C tile is the
    // `rows` × `cols` corner of this task's block at `row`, and `masks` select
    // only its `cols` columns (all asserted above).
    unsafe {
        bf16_tile(
            a.as_ptr(),
            kp,
            b.as_ptr(),
            q0,
            q1,
            bias.map(|b| b.as_ptr()),
            block.ptr.add(row * block.stride),
            block.stride,
            rows,
            masks,
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, b, q0, q1, bias, block, row, rows, masks);
        unreachable!("an Avx512Bf16 proof exists only on x86_64")
    }
}

/// `C[rows × cols] += A_block[:, q0..q1] · B_group[q0..q1, :]` for one block
/// of `MR` rows and `NB` panels of 16 columns; with `bias`, C is overwritten
/// with `bias + product` instead. `a` is the block's first row (rows `kp`
/// pairs apart, padded to `MR` rows), `b` the group's packed panels, `bias`
/// the group's first bias value, `c` the tile's first element (rows `ldc`
/// apart); only the first `rows` rows and the columns set in `masks` are
/// read or written.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn bf16_tile(
    a: *const u32,
    kp: usize,
    b: *const u32,
    q0: usize,
    q1: usize,
    bias: Option<*const f32>,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    masks: &[u16; NB],
) {
    use std::arch::x86_64::*;
    let init: [__m512; NB] = match bias {
        Some(bp) => std::array::from_fn(|j| _mm512_maskz_loadu_ps(masks[j], bp.add(j * LANES))),
        None => [_mm512_setzero_ps(); NB],
    };
    let mut acc = [init; MR];
    for q in q0..q1 {
        let bv: [__m512bh; NB] = std::array::from_fn(|j| {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                b.add((q * NB + j) * LANES) as *const _,
            ))
        });
        for (i, acc_row) in acc.iter_mut().enumerate() {
            let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                *a.add(i * kp + q) as i32,
            ));
            for j in 0..NB {
                acc_row[j] = _mm512_dpbf16_ps(acc_row[j], av, bv[j]);
            }
        }
    }
    for (i, acc_row) in acc.iter().enumerate().take(rows) {
        for j in 0..NB {
            if masks[j] == 0 {
                continue;
            }
            let p = c.add(i * ldc + j * LANES);
            let value = if bias.is_some() {
                acc_row[j]
            } else {
                _mm512_add_ps(_mm512_maskz_loadu_ps(masks[j], p), acc_row[j])
            };
            _mm512_mask_storeu_ps(p, masks[j], value);
        }
    }
}

/// What one query row of attention reads: `q` (d values), `kt` = Kᵀ
/// `[d][lp]` with keys zero-padded to `lp` (a multiple of 16), `len` real
/// keys, the score `scale`, and `v`, the first value row, with rows
/// `stride` apart.
pub(super) struct QueryRow<'a> {
    pub(super) q: &'a [f32],
    pub(super) kt: &'a [f32],
    pub(super) lp: usize,
    pub(super) len: usize,
    pub(super) scale: f32,
    pub(super) v: &'a [f32],
    pub(super) stride: usize,
}

/// One query row of attention, `acc = softmax(q·Kᵀ·scale) · V`, in one
/// pass over registers and `scores` (`lp` values of scratch); `acc.len()`
/// = d, a multiple of 16 up to 128.
///
/// Why fused: written as three kernels, each read the previous one's
/// masked stores back at once, and loads that wait on masked stores stall
/// (no store forwarding): that stall was most of attention's time. Here
/// every store is a whole vector and the normalization is applied to
/// `acc` once instead of to every probability.
pub(super) fn attend_row_avx512(
    cpu: Avx512F,
    row: &QueryRow<'_>,
    scores: &mut [f32],
    acc: &mut [f32],
) {
    let _ = cpu;
    let &QueryRow {
        q,
        kt,
        lp,
        len,
        v,
        stride,
        ..
    } = row;
    let d = acc.len();
    assert!(q.len() == d && d > 0 && d.is_multiple_of(LANES) && d <= 8 * LANES);
    assert!(lp.is_multiple_of(LANES) && len <= lp && len > 0);
    assert!(kt.len() >= d * lp && scores.len() >= lp);
    assert!(v.len() >= (len - 1) * stride + d);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `cpu` proves avx512f. Loads of kt stay inside its d rows of
    // lp values and stores to scores inside its lp values (whole vectors,
    // lp a multiple of 16); value row j < len spans j·stride..j·stride + d,
    // inside v; acc is whole vectors. All asserted above.
    unsafe {
        // The number of value vectors as a constant, so that the loops
        // over them unroll into registers.
        match d / LANES {
            1 => attend_row_kernel::<1>(row, scores, acc),
            2 => attend_row_kernel::<2>(row, scores, acc),
            3 => attend_row_kernel::<3>(row, scores, acc),
            4 => attend_row_kernel::<4>(row, scores, acc),
            5 => attend_row_kernel::<5>(row, scores, acc),
            6 => attend_row_kernel::<6>(row, scores, acc),
            7 => attend_row_kernel::<7>(row, scores, acc),
            8 => attend_row_kernel::<8>(row, scores, acc),
            _ => unreachable!("d is 16 to 128 in steps of 16 (asserted)"),
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (q, kt, lp, len, v, stride, scores, acc);
        unreachable!("an Avx512F proof exists only on x86_64")
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn attend_row_kernel<const VECTORS: usize>(
    row: &QueryRow<'_>,
    scores: &mut [f32],
    acc: &mut [f32],
) {
    use std::arch::x86_64::*;
    let &QueryRow {
        q,
        kt,
        lp,
        len,
        scale,
        v,
        stride,
    } = row;
    let (ktp, sp) = (kt.as_ptr(), scores.as_mut_ptr());
    // Lanes of key vector `jb` that are real keys, not padding.
    let keys_at = |jb: usize| -> __mmask16 {
        let valid = len.saturating_sub(jb).min(LANES);
        ((1u32 << valid) - 1) as __mmask16
    };
    // Scores, 64 keys per pass with the accumulators in registers; the
    // running maximum over real keys comes with them.
    let mut high = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut jb = 0;
    while jb < lp {
        let width = ((lp - jb) / LANES).min(4);
        let mut s = [_mm512_setzero_ps(); 4];
        for (c, &qc) in q.iter().enumerate() {
            let bq = _mm512_set1_ps(qc);
            let key_row = ktp.add(c * lp + jb);
            for (t, st) in s.iter_mut().enumerate().take(width) {
                *st = _mm512_fmadd_ps(bq, _mm512_loadu_ps(key_row.add(t * LANES)), *st);
            }
        }
        for (t, st) in s.iter().enumerate().take(width) {
            let at = jb + t * LANES;
            high = _mm512_mask_max_ps(high, keys_at(at), high, *st);
            _mm512_storeu_ps(sp.add(at), *st);
        }
        jb += width * LANES;
    }
    // exp(score·scale − max·scale); padding lanes become 0.
    let (scale_v, shift) = (
        _mm512_set1_ps(scale),
        _mm512_set1_ps(_mm512_reduce_max_ps(high) * scale),
    );
    let mut total = _mm512_setzero_ps();
    jb = 0;
    while jb < len {
        let x = _mm512_fmsub_ps(_mm512_loadu_ps(sp.add(jb)), scale_v, shift);
        let e = _mm512_maskz_mov_ps(keys_at(jb), exp_avx512(x));
        _mm512_storeu_ps(sp.add(jb), e);
        total = _mm512_add_ps(total, e);
        jb += LANES;
    }
    // Σ_j e_j · V_j, then one division by Σ_j e_j.
    let mut out = [_mm512_setzero_ps(); VECTORS];
    let vp = v.as_ptr();
    for j in 0..len {
        let w = _mm512_set1_ps(*sp.add(j));
        let value_row = vp.add(j * stride);
        for (t, o) in out.iter_mut().enumerate() {
            *o = _mm512_fmadd_ps(w, _mm512_loadu_ps(value_row.add(t * LANES)), *o);
        }
    }
    let norm = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(total));
    for (t, o) in out.iter().enumerate() {
        _mm512_storeu_ps(acc.as_mut_ptr().add(t * LANES), _mm512_mul_ps(*o, norm));
    }
}

/// `math::exp` on 16 lanes: the same range reduction and polynomial.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(EXP_LOWEST)),
        _mm512_set1_ps(EXP_HIGHEST),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fmadd_ps(
        n,
        _mm512_set1_ps(EXP_LN2_LOW),
        _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_HIGH), x),
    );
    let mut poly = _mm512_set1_ps(EXP_POLYNOMIAL[0]);
    for &c in &EXP_POLYNOMIAL[1..] {
        poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(c));
    }
    let e = _mm512_add_ps(
        _mm512_fmadd_ps(_mm512_mul_ps(poly, r), r, r),
        _mm512_set1_ps(1.0),
    );
    let two_n = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    )));
    _mm512_mul_ps(e, two_n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to even.
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.0), 0xc000);
    }

    #[test]
    fn blocks_cover_the_buffer_once() {
        let mut buf = vec![0f32; 7 * 10];
        par_blocks(
            &mut buf,
            10,
            &[(0, 3), (3, 4)],
            4,
            |band, strip, mut block| {
                for i in 0..block.rows {
                    for v in block.row(i) {
                        *v += (band * 10 + strip + 1) as f32;
                    }
                }
            },
        );
        // Every element written exactly once, by the block that owns it.
        for (r, row) in buf.chunks(10).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let band = if r < 3 { 0 } else { 1 };
                assert_eq!(v, (band * 10 + c / 4 + 1) as f32, "({r}, {c})");
            }
        }
    }

    #[test]
    #[should_panic(expected = "bands overlap")]
    fn overlapping_bands_are_refused() {
        let mut buf = vec![0f32; 40];
        par_blocks(&mut buf, 10, &[(0, 3), (2, 2)], 4, |_, _, _| {});
    }

    #[test]
    #[should_panic(expected = "beyond the buffer")]
    fn bands_past_the_end_are_refused() {
        let mut buf = vec![0f32; 40];
        par_blocks(&mut buf, 10, &[(2, 3)], 4, |_, _, _| {});
    }

    #[test]
    fn matmul_handles_transposes_and_accumulation() {
        // A = [[1,2,3],[4,5,6]] (2×3), B = Aᵀ: A·Aᵀ = [[14,32],[32,77]].
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut c = vec![1.0f32; 4];
        matmul(
            &mut c,
            2,
            false,
            View::new(&a, 2, 3),
            View::new(&a, 2, 3).t(),
        );
        assert_eq!(c, vec![14.0, 32.0, 32.0, 77.0]);
        matmul(
            &mut c,
            2,
            true,
            View::new(&a, 2, 3),
            View::new(&a, 2, 3).t(),
        );
        assert_eq!(c, vec![28.0, 64.0, 64.0, 154.0]);
        // Aᵀ·A is 3×3, written into a wider buffer (row stride 4).
        let mut wide = vec![0f32; 12];
        matmul(
            &mut wide,
            4,
            false,
            View::new(&a, 2, 3).t(),
            View::new(&a, 2, 3),
        );
        assert_eq!(&wide[..3], &[17.0, 22.0, 27.0]);
        assert_eq!(wide[3], 0.0);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn views_must_fit_their_data() {
        View::new(&[1.0; 5], 2, 3);
    }
}
