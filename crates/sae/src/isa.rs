//! The instruction set the CPU engine's loops run with, chosen when the program runs.
//!
//! Lantern is built for baseline x86-64 (SSE2), so that one binary runs on any x86-64 host.
//! The engine's loops — the top-k scan, the decode, the per-latent gradients, Adam — are
//! written over fixed-width lane arrays, and compiled that way they run 4 lanes at a time.
//! [`isa_call!`] compiles such a function three times (baseline, AVX2 + FMA, AVX-512) and calls
//! the best the CPU has. The results are the same bits at every level: Rust never fuses a
//! multiply and an add on its own, and every sum's order is written out in the code, so a wider
//! register changes only how many lanes run at once (tested: `cpu::tests`).
//!
//! ```
//! use lantern_sae::isa::Level;
//! let best = Level::detected();
//! assert!(best.is_supported());
//! assert!(Level::Base.is_supported());
//! assert!(Level::V4.runnable() <= best);
//! ```

use std::sync::OnceLock;

/// An x86-64 feature level (the psABI's names: v3 is AVX2 + FMA, v4 adds AVX-512).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// What every x86-64 (or any other) CPU runs: SSE2.
    Base,
    /// AVX2, FMA, BMI1/2, LZCNT, POPCNT.
    V3,
    /// V3 and AVX-512 F/BW/DQ/VL.
    V4,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 3] = [Level::Base, Level::V3, Level::V4];

    /// The highest level this CPU runs (detected once).
    pub fn detected() -> Level {
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            Level::ALL
                .into_iter()
                .rev()
                .find(|l| l.probe())
                .unwrap_or(Level::Base)
        })
    }

    /// Whether this CPU runs code compiled for `self`.
    pub fn is_supported(self) -> bool {
        self <= Level::detected()
    }

    /// The level code asked to run at `self` runs at here: `self`, or the best this CPU has
    /// below it.
    pub fn runnable(self) -> Level {
        self.min(Level::detected())
    }

    fn probe(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let v3 = || {
                has!("avx2")
                    && has!("fma")
                    && has!("bmi1")
                    && has!("bmi2")
                    && has!("lzcnt")
                    && has!("popcnt")
            };
            match self {
                Level::Base => true,
                Level::V3 => v3(),
                Level::V4 => {
                    v3() && has!("avx512f")
                        && has!("avx512bw")
                        && has!("avx512dq")
                        && has!("avx512vl")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Level::Base
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Base => "base",
            Level::V3 => "v3",
            Level::V4 => "v4",
        })
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Level::ALL
            .into_iter()
            .find(|l| l.to_string() == s)
            .ok_or_else(|| format!("'{s}': expected base, v3 (AVX2 + FMA) or v4 (AVX-512)"))
    }
}

/// `isa_call!(level, f, (a: A, b: B, …) -> R)` calls `f(a, b, …)` compiled for `level`, a
/// [`Level`] (one the CPU lacks runs the best level below it that it has). `f` should be
/// `#[inline(always)]`, and so should what it calls in its loops, so that they are compiled
/// into each copy; the arguments are variables of the given types.
macro_rules! isa_call {
    ($level:expr, $f:path, ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[allow(clippy::too_many_arguments)] // the wrapped function's own
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
            fn v4($($arg: $ty),*) $(-> $ret)? {
                $f($($arg),*)
            }
            #[allow(clippy::too_many_arguments)] // the wrapped function's own
            #[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
            fn v3($($arg: $ty),*) $(-> $ret)? {
                $f($($arg),*)
            }
            let level: $crate::isa::Level = $level;
            match level.runnable() {
                // SAFETY: `runnable` is at most `Level::detected()`, so the CPU has every
                // feature `v4` is compiled with.
                $crate::isa::Level::V4 => unsafe { v4($($arg),*) },
                // SAFETY: as above, for `v3`.
                $crate::isa::Level::V3 => unsafe { v3($($arg),*) },
                $crate::isa::Level::Base => $f($($arg),*),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = $level;
            $f($($arg),*)
        }
    }};
}
pub(crate) use isa_call;
