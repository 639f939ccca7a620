//! Where the network runs: `--device auto|cpu|cuda[:N]`. A build with the `cuda` feature
//! loads the CUDA libraries at run time (cudarc's dynamic loading), so the same binary
//! starts on a machine without them and `auto` falls back to the CPU.

use candle_core::Device;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "cpu" => Some(Self::Cpu),
            "cuda" | "gpu" => Some(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Self::Cuda),
        }
    }
}

/// True when this binary was built with the `cuda` feature.
pub fn cuda_built() -> bool {
    cfg!(feature = "cuda")
}

/// Why CUDA cannot be used here, or the device.
#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> std::result::Result<Device, String> {
    // SAFETY: only probes whether the driver library can be loaded.
    let present = std::panic::catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() })
        .unwrap_or(false);
    if !present {
        return Err("the CUDA driver library (libcuda.so.1) is not installed".into());
    }
    // cudarc panics when a library it needs is missing; report, don't crash.
    match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
        Ok(Ok(d)) => {
            // Keep float32 matrix products exact (no TF32), as on the CPU.
            candle_core::cuda::set_gemm_reduced_precision_f32(false);
            Ok(d)
        }
        Ok(Err(e)) => Err(e.to_string().lines().next().unwrap_or("").to_string()),
        Err(_) => Err(
            "a CUDA library (cuBLAS, cuRAND or NVRTC) could not be loaded; \
                       put its folder on LD_LIBRARY_PATH"
                .into(),
        ),
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> std::result::Result<Device, String> {
    Err(
        "this camstream was built without CUDA (build with `scripts/build-cuda.sh`, \
         i.e. cargo build --release --features cuda)"
            .into(),
    )
}

/// The device for a choice, and a line saying which was taken (for stderr).
pub fn select(choice: DeviceChoice) -> Result<(Device, String)> {
    match choice {
        DeviceChoice::Cpu => Ok((Device::Cpu, "device: cpu".into())),
        DeviceChoice::Cuda(i) => match open_cuda(i) {
            Ok(d) => Ok((d, format!("device: cuda:{i}"))),
            Err(why) => Err(Error::Device(format!("`device` cuda:{i}: {why}"))),
        },
        DeviceChoice::Auto => match open_cuda(0) {
            Ok(d) => Ok((d, "device: cuda:0 (auto)".into())),
            Err(why) if cuda_built() => {
                Ok((Device::Cpu, format!("device: cpu (auto; no CUDA: {why})")))
            }
            Err(_) => Ok((Device::Cpu, "device: cpu (auto; built without CUDA)".into())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_fallback() {
        assert_eq!(DeviceChoice::parse("cuda:1"), Some(DeviceChoice::Cuda(1)));
        assert_eq!(DeviceChoice::parse("cuda"), Some(DeviceChoice::Cuda(0)));
        assert_eq!(DeviceChoice::parse("tpu"), None);
        let (d, msg) = select(DeviceChoice::Cpu).unwrap();
        assert!(d.is_cpu() && msg == "device: cpu");
        // This machine has no GPU: auto must give the CPU, cuda a clear error.
        if !cuda_built() {
            let (d, msg) = select(DeviceChoice::Auto).unwrap();
            assert!(d.is_cpu() && msg.contains("auto"));
            let e = select(DeviceChoice::Cuda(0)).unwrap_err().to_string();
            assert!(e.contains("built without CUDA"), "{e}");
        }
    }
}
