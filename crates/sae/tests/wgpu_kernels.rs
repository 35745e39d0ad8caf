//! The TopK step's sparse path on wgpu, i.e. on `lantern_kernels` (row top-k of the GEMM's
//! result, the bias and ReLU applied as it reads; gather decode, segment-sum backward),
//! against the CPU. A file of its own because the path is chosen by `LANTERN_SPARSE_TOPK=1`,
//! a process-wide variable; `wgpu.rs` covers the default dense path.

mod wgpu_common;

use lantern_sae::Arch;
use wgpu_common::compare;

#[test]
fn topk_steps_on_the_kernel_path_match_cpu() {
    // SAFETY: the only test of this binary, so no other thread reads the environment.
    unsafe { std::env::set_var("LANTERN_SPARSE_TOPK", "1") };
    compare(Arch::TopK { k: 5 }, true);
    compare(Arch::TopK { k: 40 }, true);
    compare(Arch::TopK { k: 5 }, false);
}
