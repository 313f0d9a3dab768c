//! `--device NAME` → a Burn device, with one-line errors that list what is available.
//!
//! flex (default CPU), ndarray (CPU), wgpu (Vulkan / Metal / DX12; on a machine without a GPU it
//! runs through a software driver such as Mesa's lavapipe), cuda (only with `--features cuda`).

use anyhow::{Result, bail};
use burn::prelude::*;

pub const AVAILABLE: &str = if cfg!(feature = "cuda") {
    "flex, ndarray, wgpu, cuda"
} else {
    "flex, ndarray, wgpu"
};

/// Refuses an unknown device name without starting any device (for checks before work starts).
pub fn check_name(name: &str) -> Result<()> {
    match name {
        "flex" | "cpu" | "ndarray" | "wgpu" | "gpu" => Ok(()),
        "cuda" if cfg!(feature = "cuda") => Ok(()),
        "cuda" => cuda().map(|_| ()),
        other => bail!("unknown device `{other}`; available: {AVAILABLE}"),
    }
}

pub fn select(name: &str) -> Result<Device> {
    match name {
        "flex" | "cpu" => Ok(Device::flex()),
        #[allow(deprecated)]
        "ndarray" => Ok(Device::ndarray()),
        "wgpu" | "gpu" => match Device::wgpu_options().init() {
            Ok(device) => Ok(device),
            Err(e) => bail!(
                "GPU unavailable for --device wgpu ({e}); use --device flex (available: {AVAILABLE})"
            ),
        },
        "cuda" => cuda(),
        other => bail!("unknown device `{other}`; available: {AVAILABLE}"),
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Device> {
    Ok(Device::cuda(0))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Device> {
    bail!(
        "this zoo was built without CUDA; rebuild with `cargo run --release --features zoo-cli/cuda` or use --device flex (available: {AVAILABLE})"
    )
}
