//! SHA-256 of dataset bytes: the single largest cost of a JSONL job.
//!
//! The report records the digest of every input and every output (CONTRACT §6), so a filter
//! job hashes each byte it reads and each byte it keeps. One SHA-256 stream is a chain of
//! dependent rounds: on a core with the SHA extensions it waits on each round's latency and
//! leaves the unit half idle. Two independent streams interleaved on the same core fill
//! that gap: hashing an input chunk together with the kept bytes written from it is about
//! 1.5 times as fast as hashing them one after the other when the bytes come from memory,
//! and 10-15% faster when they are still in L2 (as 1 MiB chunks are; see `rows::CHUNK_SIZE`).
//!
//! `Sha256` is an ordinary incremental hasher (its single-stream rounds are the `sha2`
//! crate's); `update_pair` advances two of them at once. Without the SHA extensions (or off
//! x86-64) a pair is simply hashed one stream after the other.

use sha2::block_api::compress256;

const BLOCK: usize = 64;

/// The initial hash value (FIPS 180-4 §5.3.3).
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// An incremental SHA-256.
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    /// A partial block waiting for more bytes.
    block: [u8; BLOCK],
    filled: usize,
    /// Bytes hashed so far.
    len: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256::new()
    }
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sha256").field("len", &self.len).finish()
    }
}

impl Sha256 {
    pub fn new() -> Sha256 {
        Sha256 {
            state: H0,
            block: [0; BLOCK],
            filled: 0,
            len: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        let (blocks, tail) = self.take(data);
        compress256(&mut self.state, blocks);
        self.keep(tail);
    }

    /// The digest of everything hashed so far, as lowercase hex.
    pub fn hex(&self) -> String {
        hex::encode(self.digest())
    }

    pub fn digest(&self) -> [u8; 32] {
        let mut last = self.clone();
        let bits = last.len.wrapping_mul(8);
        let mut pad = [0u8; 2 * BLOCK];
        pad[0] = 0x80;
        // 0x80, then zeros up to 8 bytes short of a block boundary, then the bit length.
        let zeros = (BLOCK + BLOCK - 9 - last.filled) % BLOCK;
        let end = 1 + zeros + 8;
        pad[1 + zeros..end].copy_from_slice(&bits.to_be_bytes());
        last.update(&pad[..end]);
        debug_assert_eq!(last.filled, 0);
        let mut out = [0u8; 32];
        for (bytes, word) in out.chunks_exact_mut(4).zip(last.state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// Completes the buffered partial block from the front of `data` and returns the whole
    /// blocks that follow and the tail after them, which `keep` must buffer once the blocks
    /// are compressed.
    fn take<'d>(&mut self, data: &'d [u8]) -> (&'d [[u8; BLOCK]], &'d [u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        let mut data = data;
        if self.filled > 0 {
            let n = (BLOCK - self.filled).min(data.len());
            self.block[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled < BLOCK {
                return (&[], &[]);
            }
            compress256(&mut self.state, &[self.block]);
            self.filled = 0;
        }
        data.as_chunks::<BLOCK>()
    }

    fn keep(&mut self, tail: &[u8]) {
        self.block[self.filled..self.filled + tail.len()].copy_from_slice(tail);
        self.filled += tail.len();
    }
}

/// Hashes `a_data` into `a` and `b_data` into `b`, interleaving the two streams on this core
/// for as many whole blocks as both have.
pub fn update_pair(a: &mut Sha256, a_data: &[u8], b: &mut Sha256, b_data: &[u8]) {
    let (a_blocks, a_tail) = a.take(a_data);
    let (b_blocks, b_tail) = b.take(b_data);
    let both = a_blocks.len().min(b_blocks.len());
    let (a_both, a_rest) = a_blocks.split_at(both);
    let (b_both, b_rest) = b_blocks.split_at(both);
    if !shani::compress_pair(&mut a.state, a_both, &mut b.state, b_both) {
        compress256(&mut a.state, a_both);
        compress256(&mut b.state, b_both);
    }
    compress256(&mut a.state, a_rest);
    compress256(&mut b.state, b_rest);
    a.keep(a_tail);
    b.keep(b_tail);
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use std::arch::x86_64::*;

    use super::BLOCK;

    /// The round constants (FIPS 180-4 §4.2.2).
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// Compresses `a_blocks` into `a` and `b_blocks` (as many) into `b`; false, doing
    /// nothing, when this CPU lacks the instructions.
    pub fn compress_pair(
        a: &mut [u32; 8],
        a_blocks: &[[u8; BLOCK]],
        b: &mut [u32; 8],
        b_blocks: &[[u8; BLOCK]],
    ) -> bool {
        assert_eq!(a_blocks.len(), b_blocks.len());
        let usable = is_x86_feature_detected!("sha")
            && is_x86_feature_detected!("sse4.1")
            && is_x86_feature_detected!("ssse3");
        if usable && !a_blocks.is_empty() {
            // SAFETY: the target features `compress` is compiled for were detected above.
            unsafe { compress([a, b], [a_blocks, b_blocks]) };
        }
        usable
    }

    /// N independent streams compressed in lockstep: the rounds of one stream fill the
    /// latency of the other's. Every `blocks[i]` has the same length.
    ///
    /// The SHA instructions keep the state as two vectors, ABEF and CDGH (A in the high
    /// lane); each `sha256rnds2` performs two rounds with the message words (plus round
    /// constants) in its third operand's low half.
    // Block `b` of every stream is compressed in the same pass: the index is the point.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress<const N: usize>(states: [&mut [u32; 8]; N], blocks: [&[[u8; BLOCK]]; N]) {
        // Message words are big-endian: reverse the bytes of each 32-bit lane.
        let bswap = _mm_set_epi64x(0x0c0d0e0f_08090a0b, 0x04050607_00010203);
        let mut abef = [_mm_setzero_si128(); N];
        let mut cdgh = [_mm_setzero_si128(); N];
        for i in 0..N {
            let abcd = _mm_loadu_si128(states[i].as_ptr().cast());
            let efgh = _mm_loadu_si128(states[i].as_ptr().add(4).cast());
            let badc = _mm_shuffle_epi32(abcd, 0xB1);
            let hgfe = _mm_shuffle_epi32(efgh, 0x1B);
            abef[i] = _mm_alignr_epi8(badc, hgfe, 8);
            cdgh[i] = _mm_blend_epi16(hgfe, badc, 0xF0);
        }
        for b in 0..blocks[0].len() {
            let (abef_in, cdgh_in) = (abef, cdgh);
            // The last four groups of message words, W[t-16..t] for each stream.
            let mut w = [[_mm_setzero_si128(); 4]; N];
            // Four rounds of every stream with message group `g` (words 4g..4g+4). Written
            // out sixteen times rather than looped: with `g` a constant, `w` lives in
            // registers instead of on the stack, and one stream's rounds fill the other's
            // latency without a loop between them.
            macro_rules! group {
                ($g:literal) => {
                    for i in 0..N {
                        let words = if $g < 4 {
                            let raw = _mm_loadu_si128(blocks[i][b].as_ptr().add(16 * $g).cast());
                            _mm_shuffle_epi8(raw, bswap)
                        } else {
                            // W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16], four at a time.
                            let (w16, w12) = (w[i][$g % 4], w[i][($g + 1) % 4]);
                            let (w8, w4) = (w[i][($g + 2) % 4], w[i][($g + 3) % 4]);
                            let s0 = _mm_sha256msg1_epu32(w16, w12);
                            let w7 = _mm_alignr_epi8(w4, w8, 4);
                            _mm_sha256msg2_epu32(_mm_add_epi32(s0, w7), w4)
                        };
                        w[i][$g % 4] = words;
                        let k = _mm_loadu_si128(K.as_ptr().add(4 * $g).cast());
                        let wk = _mm_add_epi32(words, k);
                        cdgh[i] = _mm_sha256rnds2_epu32(cdgh[i], abef[i], wk);
                        abef[i] =
                            _mm_sha256rnds2_epu32(abef[i], cdgh[i], _mm_shuffle_epi32(wk, 0x0E));
                    }
                };
            }
            group!(0);
            group!(1);
            group!(2);
            group!(3);
            group!(4);
            group!(5);
            group!(6);
            group!(7);
            group!(8);
            group!(9);
            group!(10);
            group!(11);
            group!(12);
            group!(13);
            group!(14);
            group!(15);
            for i in 0..N {
                abef[i] = _mm_add_epi32(abef[i], abef_in[i]);
                cdgh[i] = _mm_add_epi32(cdgh[i], cdgh_in[i]);
            }
        }
        for (i, state) in states.into_iter().enumerate() {
            let abef = _mm_shuffle_epi32(abef[i], 0x1B);
            let cdgh = _mm_shuffle_epi32(cdgh[i], 0xB1);
            let abcd = _mm_blend_epi16(abef, cdgh, 0xF0);
            let efgh = _mm_alignr_epi8(cdgh, abef, 8);
            _mm_storeu_si128(state.as_mut_ptr().cast(), abcd);
            _mm_storeu_si128(state.as_mut_ptr().add(4).cast(), efgh);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod shani {
    use super::BLOCK;

    pub fn compress_pair(
        _: &mut [u32; 8],
        _: &[[u8; BLOCK]],
        _: &mut [u32; 8],
        _: &[[u8; BLOCK]],
    ) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use sha2::Digest;

    fn reference(data: &[u8]) -> String {
        hex::encode(sha2::Sha256::digest(data))
    }

    /// Bytes that differ at every offset, so a misplaced block changes the digest.
    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        Rng(seed).bytes(len)
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            Sha256::new().hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = Sha256::new();
        h.update(b"abc");
        assert_eq!(
            h.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn every_length_around_the_padding_boundaries_matches_the_reference() {
        let data = bytes(3 * BLOCK + 1, 1);
        for len in 0..data.len() {
            let mut h = Sha256::new();
            h.update(&data[..len]);
            assert_eq!(h.hex(), reference(&data[..len]), "length {len}");
        }
    }

    #[test]
    fn updates_split_anywhere_give_the_whole_digest() {
        let data = bytes(5000, 2);
        for step in [1, 3, 63, 64, 65, 127, 1000, 4999] {
            let mut h = Sha256::new();
            for piece in data.chunks(step) {
                h.update(piece);
            }
            assert_eq!(h.hex(), reference(&data), "pieces of {step}");
        }
    }

    #[test]
    fn paired_streams_each_match_their_own_reference() {
        let a = bytes(40_000, 3);
        let b = bytes(40_000, 4);
        // Different piece sizes on each side: the streams fall in and out of block
        // alignment, one runs out first, and pieces smaller than a block only buffer.
        for (step_a, step_b) in [
            (1, 1),
            (64, 64),
            (4096, 4096),
            (100, 3),
            (5000, 777),
            (13, 8192),
        ] {
            let (mut ha, mut hb) = (Sha256::new(), Sha256::new());
            let mut pa = a.chunks(step_a);
            let mut pb = b.chunks(step_b);
            loop {
                match (pa.next(), pb.next()) {
                    (None, None) => break,
                    (x, y) => update_pair(&mut ha, x.unwrap_or(&[]), &mut hb, y.unwrap_or(&[])),
                }
            }
            assert_eq!(ha.hex(), reference(&a), "a in pieces of {step_a}/{step_b}");
            assert_eq!(hb.hex(), reference(&b), "b in pieces of {step_a}/{step_b}");
        }
    }

    #[test]
    fn a_pair_mixed_with_single_updates_keeps_both_streams_apart() {
        let a = bytes(10_000, 5);
        let b = bytes(7_000, 6);
        let (mut ha, mut hb) = (Sha256::new(), Sha256::new());
        ha.update(&a[..10]);
        update_pair(&mut ha, &a[10..6000], &mut hb, &b[..5000]);
        hb.update(&b[5000..5001]);
        update_pair(&mut ha, &a[6000..], &mut hb, &b[5001..]);
        assert_eq!(ha.hex(), reference(&a));
        assert_eq!(hb.hex(), reference(&b));
    }

    #[test]
    fn the_digest_so_far_does_not_end_the_stream() {
        let data = bytes(300, 7);
        let mut h = Sha256::new();
        h.update(&data[..100]);
        assert_eq!(h.hex(), reference(&data[..100]));
        h.update(&data[100..]);
        assert_eq!(h.hex(), reference(&data));
    }

    /// A piece size biased towards block-boundary cases.
    fn piece(r: &mut Rng) -> usize {
        match r.below(6) {
            0 => 0,
            1 => r.below(8),
            2 => r.pick(&[55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129]),
            3 => 64 * r.below(20) + r.below(3),
            4 => r.below(300),
            _ => r.below(9000),
        }
    }

    #[test]
    fn fips_vectors_multi_block_and_million_a() {
        let mut h = Sha256::new();
        h.update(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
        assert_eq!(
            h.hex(),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let (mut a, mut b) = (Sha256::new(), Sha256::new());
        let m = vec![b'a'; 1_000_000];
        for piece in m.chunks(4093) {
            update_pair(&mut a, piece, &mut b, piece);
        }
        let want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
        assert_eq!(a.hex(), want);
        assert_eq!(b.hex(), want);
    }

    #[test]
    fn padding_at_every_filled_value_single_and_paired() {
        // Reach each `filled` (0..64) after 0, 1 and several whole blocks, both by single
        // updates and as the tail of a paired update.
        let mut r = Rng(0x1234_5678);
        let data = r.bytes(10 * BLOCK);
        for blocks in [0usize, 1, 2, 7] {
            for filled in 0..BLOCK {
                let len = blocks * BLOCK + filled;
                let mut h = Sha256::new();
                h.update(&data[..len]);
                assert_eq!(h.hex(), reference(&data[..len]), "single {len}");
                let (mut a, mut b) = (Sha256::new(), Sha256::new());
                update_pair(&mut a, &data[..len], &mut b, &data[BLOCK..BLOCK + len]);
                assert_eq!(a.hex(), reference(&data[..len]), "pair a {len}");
                assert_eq!(
                    b.hex(),
                    reference(&data[BLOCK..BLOCK + len]),
                    "pair b {len}"
                );
            }
        }
    }

    #[test]
    fn empty_inputs_on_either_or_both_sides() {
        let mut r = Rng(99);
        let x = r.bytes(1000);
        let (mut a, mut b) = (Sha256::new(), Sha256::new());
        update_pair(&mut a, &[], &mut b, &[]);
        assert_eq!(a.hex(), reference(b""));
        assert_eq!(b.hex(), reference(b""));
        update_pair(&mut a, &x, &mut b, &[]);
        update_pair(&mut a, &[], &mut b, &x);
        update_pair(&mut a, &[], &mut b, &[]);
        assert_eq!(a.hex(), reference(&x));
        assert_eq!(b.hex(), reference(&x));
    }

    #[test]
    fn a_stream_ending_mid_block_then_continued_paired() {
        let mut r = Rng(7);
        let a_data = r.bytes(5000);
        let b_data = r.bytes(5000);
        for cut in [1usize, 10, 55, 56, 63, 64, 65, 100, 127, 128] {
            let (mut a, mut b) = (Sha256::new(), Sha256::new());
            a.update(&a_data[..cut]);
            // Pieces shorter than the space left in a's block, then exactly filling it.
            let room = (BLOCK - cut % BLOCK) % BLOCK;
            let small = room.saturating_sub(1).min(3);
            update_pair(&mut a, &a_data[cut..cut + small], &mut b, &b_data[..200]);
            let at = cut + small;
            let fill = (BLOCK - at % BLOCK) % BLOCK;
            update_pair(&mut a, &a_data[at..at + fill], &mut b, &b_data[200..201]);
            let at = at + fill;
            update_pair(&mut a, &a_data[at..], &mut b, &b_data[201..]);
            assert_eq!(a.hex(), reference(&a_data), "cut {cut}");
            assert_eq!(b.hex(), reference(&b_data), "cut {cut}");
        }
    }

    #[test]
    fn randomized_pieces_on_both_streams_with_single_updates_and_peeks() {
        let mut r = Rng(0xDEAD_BEEF_CAFE_F00D);
        for round in 0..60 {
            let a_len = r.below(20_000);
            let b_len = r.below(20_000);
            let a_data = r.bytes(a_len);
            let b_data = r.bytes(b_len);
            let (mut a, mut b) = (Sha256::new(), Sha256::new());
            let (mut ia, mut ib) = (0usize, 0usize);
            while ia < a_len || ib < b_len {
                let mut na = piece(&mut r).min(a_len - ia);
                let mut nb = piece(&mut r).min(b_len - ib);
                match r.below(8) {
                    0 => {
                        nb = 0;
                        a.update(&a_data[ia..ia + na])
                    }
                    1 => {
                        na = 0;
                        b.update(&b_data[ib..ib + nb])
                    }
                    2 => update_pair(&mut b, &b_data[ib..ib + nb], &mut a, &a_data[ia..ia + na]),
                    _ => update_pair(&mut a, &a_data[ia..ia + na], &mut b, &b_data[ib..ib + nb]),
                }
                ia += na;
                ib += nb;
                if r.below(16) == 0 {
                    assert_eq!(a.hex(), reference(&a_data[..ia]), "round {round} peek a");
                    assert_eq!(b.hex(), reference(&b_data[..ib]), "round {round} peek b");
                }
            }
            assert_eq!(a.hex(), reference(&a_data), "round {round} a");
            assert_eq!(b.hex(), reference(&b_data), "round {round} b");
        }
    }

    #[test]
    fn the_sha_ni_kernel_is_the_one_under_test_here() {
        #[cfg(target_arch = "x86_64")]
        {
            let x = [[7u8; BLOCK]; 3];
            let (mut s1, mut s2) = (H0, H0);
            let used = shani::compress_pair(&mut s1, &x, &mut s2, &x);
            let mut want = H0;
            compress256(&mut want, &x);
            if is_x86_feature_detected!("sha") {
                assert!(used, "SHA-NI detected but not used");
            }
            if used {
                assert_eq!(s1, want);
                assert_eq!(s2, want);
            }
        }
    }
}
