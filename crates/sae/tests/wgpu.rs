//! The same SAE computations on `wgpu` (WGSL; Mesa's lavapipe in CI) as on `cpu`.
//!
//! Without a wgpu adapter these tests print why and pass, unless `LANTERN_REQUIRE_WGPU=1`
//! (set by `.ci/run`), where a missing adapter fails them.

mod wgpu_common;

use lantern_sae::Arch;
use wgpu_common::{compare, compare_matryoshka};

#[test]
fn topk_step_with_auxk_on_wgpu_matches_cpu() {
    compare(Arch::TopK { k: 5 }, true);
}

#[test]
fn topk_with_k_above_the_stock_reduction_limit_on_wgpu_matches_cpu() {
    compare(Arch::TopK { k: 40 }, true);
}

#[test]
fn batchtopk_step_on_wgpu_matches_cpu() {
    compare(Arch::BatchTopK { k: 5 }, false);
}

#[test]
fn matryoshka_batchtopk_step_with_auxk_on_wgpu_matches_cpu() {
    compare_matryoshka(Arch::BatchTopK { k: 5 }, true, &[12, 40]);
}

#[test]
fn relu_step_on_wgpu_matches_cpu() {
    compare(Arch::Relu, false);
}

#[test]
fn jumprelu_step_on_wgpu_matches_cpu() {
    compare(Arch::JumpRelu, false);
}
