//! Benchmarks of Lantern (criterion, in `benches/`); see BENCHMARKS.md for measured numbers.
