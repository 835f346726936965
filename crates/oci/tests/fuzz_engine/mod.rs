//! A small mutation fuzzer for stable Rust: seeds from a corpus of valid and hostile inputs,
//! mutated (bit flips, interesting bytes, deletions, duplications, splices, truncations)
//! by a seeded generator, for a time budget (`AERUGO_FUZZ_SECONDS` per target, default 1).
//! It is not coverage-guided: `cargo fuzz` needs a nightly toolchain, which the development
//! machines cannot install. A failing input is printed (escaped) by the panic of its check.

use std::time::{Duration, Instant};

/// Bytes that change how parsers branch.
const INTERESTING: &[&[u8]] = &[
    b"/",
    b":",
    b"@",
    b".",
    b"..",
    b"-",
    b"_",
    b"__",
    b"+",
    b"=",
    b",",
    b"*",
    b"?",
    b"%2e",
    b"%2f",
    b"\0",
    b"\xff",
    b"\xc3\xa9",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b"sha256:",
    b"sha512:",
    b"bytes=",
    b"-1",
    b"0",
    b"18446744073709551615",
    b"18446744073709551616",
    b"repository:",
    b"pull,push",
    b" ",
    b"\n",
    b"A",
];

/// A seeded xorshift generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// One mutant of `seed` (possibly spliced with `other`).
pub fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, piece.iter().copied());
            }
            2 if !out.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(16)).min(out.len());
                let piece = out[start..end].to_vec();
                out.splice(at..at, piece);
            }
            4 if !other.is_empty() => {
                let start = rng.below(other.len());
                out.truncate(at);
                out.extend_from_slice(&other[start..]);
            }
            5 => out.truncate(at),
            6 => {
                let i = rng.below(out.len().max(1));
                out.insert(i.min(out.len()), rng.next() as u8);
            }
            _ => {
                // A long run: limits and overflow.
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                for _ in 0..rng.below(300) {
                    out.extend_from_slice(piece);
                }
            }
        }
    }
    out
}

/// Runs `check` on the corpus and then on mutants until the budget is spent; returns how many
/// inputs ran.
pub fn fuzz(name: &str, corpus: &[&[u8]], mut check: impl FnMut(&[u8])) -> u64 {
    let seconds: f64 = std::env::var("AERUGO_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let seed = name.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut rng = Rng::new(seed);
    let mut runs = 0u64;
    for input in corpus {
        check(input);
        runs += 1;
    }
    while Instant::now() < deadline {
        for _ in 0..256 {
            let a = corpus[rng.below(corpus.len())];
            let b = corpus[rng.below(corpus.len())];
            let input = mutate(&mut rng, a, b);
            check(&input);
            runs += 1;
        }
    }
    eprintln!("fuzz {name}: {runs} inputs in {seconds} s");
    runs
}
