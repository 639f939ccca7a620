#![no_main]

// A WFDB record is two files: the header text up to the first NUL byte, the signal
// data (format 212 or 16) after it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (hea, dat) = (&data[..cut], data.get(cut + 1..).unwrap_or(&[]));
    camstream_fuzz::with_files(&[("rec.hea", hea), ("rec.dat", dat)], camstream_fuzz::read_signal);
});
