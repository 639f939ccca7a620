#![no_main]

use camstream_core::{ModelRequest, ModelSource, Network};

// An ONNX graph, loaded as `--model x.onnx` loads it (parse, check, build).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    camstream_fuzz::with_files(&[("m.onnx", data)], |p| {
        let req = ModelRequest::new(ModelSource::Onnx(p.to_path_buf()));
        let _ = Network::load(&req, &candle_core::Device::Cpu);
    });
});
