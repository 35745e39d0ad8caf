//! ggml tensor types and their dequantization to `f32`.
//!
//! GGUF files store each tensor as rows of fixed-size *blocks*; a block packs `block_len`
//! consecutive elements of one row into `block_bytes` bytes. [`GgmlType`] names a type id and
//! knows its block geometry (for every type llama.cpp defines, so byte ranges can be checked
//! even for tensors this crate cannot decode); [`dequantize`] turns the blocks of the types
//! listed in [`GgmlType::is_dequantizable`] back into `f32`, bit-for-bit as
//! `dequantize_row_*` in llama.cpp's `ggml-quants.c` does. All multi-byte fields are
//! little-endian; `f16` is IEEE half precision. Rows are decoded in parallel with rayon when a
//! tensor is large.
//!
//! ```
//! use lantern_lm::quant::{dequantize, GgmlType};
//! // One Q8_0 block: f16 scale 0.5, then 32 signed bytes.
//! let mut block = half::f16::from_f32(0.5).to_le_bytes().to_vec();
//! block.extend((0..32).map(|i| (i as i8 - 16) as u8));
//! let x = dequantize(GgmlType::Q8_0, &block, 32).unwrap();
//! assert_eq!(x[0], -8.0);
//! assert_eq!(x[31], 7.5);
//! ```

use half::{bf16, f16};
use rayon::prelude::*;
use std::fmt;

/// Tensors with at least this many elements are dequantized row-parallel.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

/// A ggml tensor type id, as stored in a GGUF tensor info.
///
/// A newtype rather than an enum so that ids this crate does not know survive a round trip
/// and can be named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

/// (id, name, elements per block, bytes per block) of every type llama.cpp defines; ids 4, 5
/// and 31..=33, 36..=38 were removed from ggml and are absent. Q8_1 is ggml's current
/// 36-byte block (f16 `d` and `s`); gguf-py's table still lists the old f32 layout (40).
const TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

impl GgmlType {
    pub const F32: Self = Self(0);
    pub const F16: Self = Self(1);
    pub const Q4_0: Self = Self(2);
    pub const Q4_1: Self = Self(3);
    pub const Q5_0: Self = Self(6);
    pub const Q5_1: Self = Self(7);
    pub const Q8_0: Self = Self(8);
    pub const Q8_1: Self = Self(9);
    pub const Q2_K: Self = Self(10);
    pub const Q3_K: Self = Self(11);
    pub const Q4_K: Self = Self(12);
    pub const Q5_K: Self = Self(13);
    pub const Q6_K: Self = Self(14);
    pub const Q8_K: Self = Self(15);
    pub const IQ2_XXS: Self = Self(16);
    pub const IQ2_XS: Self = Self(17);
    pub const IQ3_XXS: Self = Self(18);
    pub const IQ1_S: Self = Self(19);
    pub const IQ4_NL: Self = Self(20);
    pub const IQ3_S: Self = Self(21);
    pub const IQ2_S: Self = Self(22);
    pub const IQ4_XS: Self = Self(23);
    pub const I8: Self = Self(24);
    pub const I16: Self = Self(25);
    pub const I32: Self = Self(26);
    pub const I64: Self = Self(27);
    pub const F64: Self = Self(28);
    pub const IQ1_M: Self = Self(29);
    pub const BF16: Self = Self(30);
    pub const TQ1_0: Self = Self(34);
    pub const TQ2_0: Self = Self(35);
    pub const MXFP4: Self = Self(39);
    pub const NVFP4: Self = Self(40);
    pub const Q1_0: Self = Self(41);

    fn entry(self) -> Option<&'static (u32, &'static str, usize, usize)> {
        TYPES.iter().find(|t| t.0 == self.0)
    }

    /// ggml's name of the type (`"Q4_K"`), or `None` for an id llama.cpp does not define.
    pub fn name(self) -> Option<&'static str> {
        self.entry().map(|t| t.1)
    }

    /// Elements per block (1 for plain float/int types), `None` for an unknown id.
    pub fn block_len(self) -> Option<usize> {
        self.entry().map(|t| t.2)
    }

    /// Bytes per block, `None` for an unknown id.
    pub fn block_bytes(self) -> Option<usize> {
        self.entry().map(|t| t.3)
    }

    /// Whether [`dequantize`] decodes this type: F32, F16, BF16, F64, Q4_0, Q4_1, Q5_0, Q5_1,
    /// Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K.
    pub fn is_dequantizable(self) -> bool {
        block_decoder(self).is_some()
    }

    /// Bytes taken by `n_elements` elements, `None` if the id is unknown, `n_elements` is not
    /// a whole number of blocks, or the size overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let (len, bytes) = (self.block_len()? as u64, self.block_bytes()? as u64);
        if !n_elements.is_multiple_of(len) {
            return None;
        }
        (n_elements / len).checked_mul(bytes)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "ggml type id {}", self.0),
        }
    }
}

/// Decodes one block of `block_len` elements from `block_bytes` bytes into `out`.
type BlockDecoder = fn(&[u8], &mut [f32]);

fn block_decoder(ty: GgmlType) -> Option<BlockDecoder> {
    Some(match ty {
        GgmlType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, y| y[0] = f16_at(b, 0),
        GgmlType::BF16 => |b, y| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::F64 => |b, y| y[0] = f64::from_le_bytes(b[..8].try_into().unwrap()) as f32,
        GgmlType::Q4_0 => block_q4_0,
        GgmlType::Q4_1 => block_q4_1,
        GgmlType::Q5_0 => block_q5_0,
        GgmlType::Q5_1 => block_q5_1,
        GgmlType::Q8_0 => block_q8_0,
        GgmlType::Q2_K => block_q2_k,
        GgmlType::Q3_K => block_q3_k,
        GgmlType::Q4_K => block_q4_k,
        GgmlType::Q5_K => block_q5_k,
        GgmlType::Q6_K => block_q6_k,
        GgmlType::Q8_K => block_q8_k,
        _ => return None,
    })
}

/// Dequantizes `data`, a tensor of type `ty` whose rows hold `row_len` elements, to `f32`.
///
/// The element count is implied by `data.len()`. Fails with a one-line reason if the type
/// cannot be decoded, `row_len` is zero or not a multiple of the type's block length, or
/// `data` is not a whole number of rows.
pub fn dequantize(ty: GgmlType, data: &[u8], row_len: usize) -> Result<Vec<f32>, String> {
    let decode = block_decoder(ty).ok_or_else(|| format!("cannot dequantize type {ty}"))?;
    let (block_len, block_bytes) = (ty.block_len().unwrap(), ty.block_bytes().unwrap());
    if row_len == 0 || !row_len.is_multiple_of(block_len) {
        return Err(format!(
            "row length {row_len} is not a positive multiple of {ty}'s block of {block_len}"
        ));
    }
    let row_bytes = row_len / block_len * block_bytes;
    if !data.len().is_multiple_of(row_bytes) {
        return Err(format!(
            "{} bytes are not a whole number of {ty} rows of {row_len} elements ({row_bytes} bytes)",
            data.len()
        ));
    }
    let n_rows = data.len() / row_bytes;
    let mut out = vec![0f32; n_rows * row_len];
    let decode_row = |(src, dst): (&[u8], &mut [f32])| {
        for (b, y) in src
            .chunks_exact(block_bytes)
            .zip(dst.chunks_exact_mut(block_len))
        {
            decode(b, y);
        }
    };
    if out.len() >= PARALLEL_MIN_ELEMENTS {
        data.par_chunks_exact(row_bytes)
            .zip(out.par_chunks_exact_mut(row_len))
            .for_each(decode_row);
    } else {
        data.chunks_exact(row_bytes)
            .zip(out.chunks_exact_mut(row_len))
            .for_each(decode_row);
    }
    Ok(out)
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Q8_0, 34 bytes per 32 elements: `d: f16`, `qs: [i8; 32]`; `y[j] = d * qs[j]`.
fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = q as i8 as f32 * d;
    }
}

/// Q4_0, 18 bytes per 32 elements: `d: f16`, `qs: [u8; 16]`; the low nibble of `qs[j]` is
/// element `j`, the high nibble element `j + 16`; `y = d * (q - 8)`.
fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// Q4_1, 20 bytes per 32 elements: `d: f16`, `m: f16`, `qs: [u8; 16]` in Q4_0's nibble
/// order; `y = d * q + m`.
fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// The 5-bit quants of Q5_0/Q5_1: low nibbles as in Q4_0, bit `j` of the little-endian `u32`
/// `qh` is the fifth bit of element `j`.
fn q5_quants(qh: &[u8], qs: &[u8]) -> [i32; 32] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut q = [0i32; 32];
    for (j, &byte) in qs.iter().enumerate() {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        q[j] = ((byte & 0x0F) as u32 | h0) as i32;
        q[j + 16] = ((byte >> 4) as u32 | h1) as i32;
    }
    q
}

/// Q5_0, 22 bytes per 32 elements: `d: f16`, `qh: [u8; 4]`, `qs: [u8; 16]`;
/// `y = d * (q - 16)`.
fn block_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, q) in y.iter_mut().zip(q5_quants(&b[2..6], &b[6..22])) {
        *y = (q - 16) as f32 * d;
    }
}

/// Q5_1, 24 bytes per 32 elements: `d: f16`, `m: f16`, `qh: [u8; 4]`, `qs: [u8; 16]`;
/// `y = d * q + m`.
fn block_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (y, q) in y.iter_mut().zip(q5_quants(&b[4..8], &b[8..24])) {
        *y = q as f32 * d + m;
    }
}

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes of Q4_K/Q5_K
/// (`get_scale_min_k4`): sub-blocks 0..4 keep 6 bits in bytes `j` and `j + 4`; 4..8 take
/// their low 4 bits from byte `j + 4` and their top 2 bits from the spare bits of `j - 4`
/// and `j`.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K, 144 bytes per 256 elements: `d: f16`, `dmin: f16`, `scales: [u8; 12]` (eight 6-bit
/// scale/min pairs, see [`scale_min_k4`]), `qs: [u8; 128]`. Each 64 elements use 32 bytes of
/// `qs`: low nibbles are the first 32 (sub-block `2i`), high nibbles the next 32
/// (sub-block `2i + 1`); `y = d * sc * q - dmin * m`.
fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (i, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * i, scales);
        let (sc2, m2) = scale_min_k4(2 * i + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0x0F) as f32 - m1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// Q5_K, 176 bytes per 256 elements: `d: f16`, `dmin: f16`, `scales: [u8; 12]` as in Q4_K,
/// `qh: [u8; 32]`, `qs: [u8; 128]`; Q4_K's nibbles gain a fifth bit (value 16) from bit `2i`
/// (low nibbles) or `2i + 1` (high nibbles) of `qh[l]` in the `i`-th group of 64.
fn block_q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (i, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * i, scales);
        let (sc2, m2) = scale_min_k4(2 * i + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * i), 2u8 << (2 * i));
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((q[l] & 0x0F) + h1) as f32 - m1;
            y[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
        }
    }
}

/// Q6_K, 210 bytes per 256 elements: `ql: [u8; 128]` (low 4 bits), `qh: [u8; 64]` (high 2
/// bits), `scales: [i8; 16]` (one per 16 elements), `d: f16`. Each half of 128 elements uses
/// 64 bytes of `ql`, 32 of `qh` and 8 scales; within it element `l + 32k` (`l < 32`) takes
/// nibble `k / 2` of `ql[l + 32 (k % 2)]` and bits `2k..2k+2` of `qh[l]`;
/// `y = d * scale * (q - 32)`.
fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for (n, y) in y.chunks_exact_mut(128).enumerate() {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * sc[is] as i8 as f32 * q1 as f32;
            y[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
            y[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
            y[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
        }
    }
}

/// Q2_K, 84 bytes per 256 elements: `scales: [u8; 16]` (low nibble scale, high nibble min,
/// one pair per 16 elements), `qs: [u8; 64]`, `d: f16`, `dmin: f16`. Each half of 128
/// elements uses 32 bytes of `qs`; shift `2j` of bytes `0..16` / `16..32` gives the
/// 16-element groups `2j` / `2j + 1`; `y = d * sc * q - dmin * m`.
fn block_q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut is = 0;
    for (q, y) in qs.chunks_exact(32).zip(y.chunks_exact_mut(128)) {
        for (j, y) in y.chunks_exact_mut(32).enumerate() {
            let shift = 2 * j;
            for (half, y) in y.chunks_exact_mut(16).enumerate() {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32);
                for (l, y) in y.iter_mut().enumerate() {
                    *y = dl * ((q[l + 16 * half] >> shift) & 3) as f32 - ml;
                }
            }
        }
    }
}

/// Q3_K, 110 bytes per 256 elements: `hmask: [u8; 32]` (third bit), `qs: [u8; 64]` (low 2
/// bits, laid out as in Q2_K), `scales: [u8; 12]` (sixteen 6-bit scales, offset by 32),
/// `d: f16`; `y = d * (sc - 32) * (q - 4 * !hbit)`.
fn block_q3_k(b: &[u8], y: &mut [f32]) {
    let (hm, qs, packed) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    // Unpack as ggml does: four u32 words, low nibbles in bytes 0..8, top 2 bits in 8..12.
    let word = |i: usize| u32::from_le_bytes(packed[4 * i..4 * i + 4].try_into().unwrap());
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let (kmask1, kmask2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
    let aux = [
        (a0 & kmask2) | ((tmp & kmask1) << 4),
        (a1 & kmask2) | (((tmp >> 2) & kmask1) << 4),
        ((a0 >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4),
        ((a1 >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4),
    ];
    let mut scales = [0i8; 16];
    for (i, w) in aux.iter().enumerate() {
        for (k, byte) in w.to_le_bytes().into_iter().enumerate() {
            scales[4 * i + k] = byte as i8;
        }
    }
    let mut is = 0;
    let mut m = 1u8;
    for (q, y) in qs.chunks_exact(32).zip(y.chunks_exact_mut(128)) {
        for (j, y) in y.chunks_exact_mut(32).enumerate() {
            let shift = 2 * j;
            for (half, y) in y.chunks_exact_mut(16).enumerate() {
                let dl = d * (scales[is] as i32 - 32) as f32;
                is += 1;
                for (l, y) in y.iter_mut().enumerate() {
                    let k = l + 16 * half;
                    let low = ((q[k] >> shift) & 3) as i32;
                    let high = if hm[k] & m != 0 { 0 } else { 4 };
                    *y = dl * (low - high) as f32;
                }
            }
            m <<= 1;
        }
    }
}

/// Q8_K, 292 bytes per 256 elements: `d: f32`, `qs: [i8; 256]`, `bsums: [i16; 16]` (unused
/// here); `y = d * q`.
fn block_q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (y, &q) in y.iter_mut().zip(&b[4..260]) {
        *y = d * q as i8 as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_puts_low_nibbles_first() {
        let mut block = f16::from_f32(2.0).to_le_bytes().to_vec();
        block.extend([0x9Fu8; 16]); // low nibble 15, high nibble 9
        let y = dequantize(GgmlType::Q4_0, &block, 32).unwrap();
        assert!(y[..16].iter().all(|&v| v == 14.0));
        assert!(y[16..].iter().all(|&v| v == 2.0));
    }

    #[test]
    fn row_length_must_be_a_whole_number_of_blocks() {
        let err = dequantize(GgmlType::Q8_0, &[0u8; 34], 16).unwrap_err();
        assert!(err.contains("block of 32"), "{err}");
        let err = dequantize(GgmlType::Q8_0, &[0u8; 35], 32).unwrap_err();
        assert!(err.contains("whole number"), "{err}");
        let err = dequantize(GgmlType::IQ2_XXS, &[0u8; 66], 256).unwrap_err();
        assert!(err.contains("IQ2_XXS"), "{err}");
    }

    #[test]
    fn block_sizes_match_their_layouts() {
        assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Q6_K.bytes_for(255), None);
        assert_eq!(GgmlType(99).bytes_for(32), None);
        assert_eq!(GgmlType(99).to_string(), "ggml type id 99");
        assert_eq!(GgmlType::BF16.to_string(), "BF16");
    }

    #[test]
    fn large_tensors_decode_the_same_in_parallel() {
        let rows = PARALLEL_MIN_ELEMENTS / 32 + 3;
        let mut data = Vec::new();
        for r in 0..rows {
            data.extend(f16::from_f32(0.25).to_le_bytes());
            data.extend((0..32).map(|i| ((r * 7 + i) % 251) as u8));
        }
        let y = dequantize(GgmlType::Q8_0, &data, 32).unwrap();
        for (r, row) in y.chunks_exact(32).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                assert_eq!(v, ((r * 7 + i) % 251) as u8 as i8 as f32 * 0.25);
            }
        }
    }
}
