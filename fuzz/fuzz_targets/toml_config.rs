#![no_main]

use camstream_core::{ModelRequest, ModelSource, Network};

// A model config; the weights it names are missing or fuzzed too (`w.safetensors`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    camstream_fuzz::with_files(&[("model.toml", data)], |p| {
        let req = ModelRequest::new(ModelSource::Config(p.to_path_buf()));
        let _ = Network::load(&req, &candle_core::Device::Cpu);
    });
});
