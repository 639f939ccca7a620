//! WFDB records (PhysioNet): a `.hea` text header and one `.dat` file of interleaved
//! samples in format 16 (little-endian i16) or 212 (two 12-bit samples in 3 bytes).
//! Values are converted to physical units, `(digital - baseline) / gain`. Invalid
//! samples (the format's minimum, WFDB's "no data") hold the channel's last value.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{SignalError, SignalInfo, SignalReader};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    F16,
    F212,
}

impl Format {
    fn invalid(self) -> i32 {
        match self {
            Format::F16 => -32768,
            Format::F212 => -2048,
        }
    }
    fn code(self) -> &'static str {
        match self {
            Format::F16 => "16",
            Format::F212 => "212",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SignalSpec {
    pub gain: f64,
    pub baseline: i32,
    pub units: String,
    pub description: String,
}

#[derive(Clone, Debug)]
pub struct Header {
    pub record: String,
    pub fs: f64,
    pub frames: Option<u64>,
    pub dat: String,
    pub format: Format,
    pub signals: Vec<SignalSpec>,
}

/// Parses a `.hea` file's text.
pub fn parse_header(path: &Path, text: &str) -> Result<Header, SignalError> {
    let bad = |msg: String| SignalError::format(path, msg);
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let rec = lines
        .next()
        .ok_or_else(|| bad("empty WFDB header".into()))?;
    let f: Vec<&str> = rec.split_whitespace().collect();
    if f[0].contains('/') {
        return Err(bad("multi-segment WFDB records are not supported".into()));
    }
    let nsig: usize = f
        .get(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(format!("record line `{rec}`: no signal count")))?;
    if nsig == 0 {
        return Err(bad("the record has no signals".into()));
    }
    let fs = match f.get(2) {
        None => 250.0,
        Some(v) => v
            .split(['/', '('])
            .next()
            .and_then(|x| x.parse::<f64>().ok())
            .filter(|x| *x > 0.0)
            .ok_or_else(|| bad(format!("record line `{rec}`: bad sampling frequency `{v}`")))?,
    };
    let frames = match f.get(3) {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| bad(format!("record line `{rec}`: bad sample count `{v}`")))?,
        )
        .filter(|&n| n > 0),
    };
    let mut dat = None;
    let mut format = None;
    let mut signals = Vec::new();
    for i in 0..nsig {
        let line = lines
            .next()
            .ok_or_else(|| bad(format!("header lists {nsig} signals but describes {i}")))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 2 {
            return Err(bad(format!(
                "signal line `{line}`: needs a file and a format"
            )));
        }
        let code: String = f[1].chars().take_while(|c| c.is_ascii_digit()).collect();
        if f[1].len() != code.len() {
            return Err(bad(format!(
                "signal line `{line}`: skew, offsets and multiple samples per frame are not supported"
            )));
        }
        let fmt = match code.as_str() {
            "16" => Format::F16,
            "212" => Format::F212,
            other => {
                return Err(bad(format!(
                    "WFDB format {other} is not supported (supported: 16, 212)"
                )))
            }
        };
        match (&dat, format) {
            (None, _) => {
                dat = Some(f[0].to_string());
                format = Some(fmt);
            }
            (Some(d), Some(fm)) if d == f[0] && fm == fmt => {}
            _ => {
                return Err(bad(
                    "signals stored in several .dat files or formats are not supported".into(),
                ))
            }
        }
        let adczero: i32 = f.get(5).and_then(|v| v.parse().ok()).unwrap_or(0);
        let (gain, baseline, units) = match f.get(2) {
            None => (200.0, adczero, "mV".to_string()),
            Some(g) => {
                let (num, rest) = g.split_at(g.find(['(', '/']).unwrap_or(g.len()));
                let gain: f64 = num
                    .parse()
                    .map_err(|_| bad(format!("signal line `{line}`: bad gain `{g}`")))?;
                let baseline = match rest.strip_prefix('(') {
                    Some(r) => r
                        .split(')')
                        .next()
                        .and_then(|b| b.parse().ok())
                        .ok_or_else(|| bad(format!("signal line `{line}`: bad baseline")))?,
                    None => adczero,
                };
                let units = rest
                    .rsplit_once('/')
                    .map(|(_, u)| u.to_string())
                    .unwrap_or_else(|| "mV".into());
                (if gain == 0.0 { 200.0 } else { gain }, baseline, units)
            }
        };
        let description = if f.len() > 8 {
            f[8..].join(" ")
        } else {
            format!("sig{i}")
        };
        signals.push(SignalSpec {
            gain,
            baseline,
            units,
            description,
        });
    }
    Ok(Header {
        record: f[0].to_string(),
        fs,
        frames,
        dat: dat.unwrap_or_default(),
        format: format.unwrap_or(Format::F16),
        signals,
    })
}

pub struct WfdbReader {
    info: SignalInfo,
    header: Header,
    dat_path: PathBuf,
    file: BufReader<File>,
    /// Decoded digital samples not yet returned (212 yields them in pairs).
    queue: std::collections::VecDeque<i32>,
    last: Vec<f32>,
    left: Option<u64>,
    buf: Vec<u8>,
}

impl WfdbReader {
    /// `record` is the record path without extension (`data/208` for `data/208.hea`).
    pub fn open(record: &Path) -> Result<Self, SignalError> {
        let hea = record.with_extension("hea");
        let text = std::fs::read_to_string(&hea).map_err(|e| SignalError::io(&hea, e))?;
        let header = parse_header(&hea, &text)?;
        let dir = hea.parent().unwrap_or(Path::new("."));
        let dat_path = dir.join(&header.dat);
        let file = File::open(&dat_path).map_err(|e| SignalError::io(&dat_path, e))?;
        let len = file
            .metadata()
            .map_err(|e| SignalError::io(&dat_path, e))?
            .len();
        let nsig = header.signals.len() as u64;
        let bytes_for = |frames: u64| match header.format {
            Format::F16 => frames * nsig * 2,
            Format::F212 => (frames * nsig * 3).div_ceil(2),
        };
        let held = match header.format {
            Format::F16 => len / 2 / nsig,
            Format::F212 => len * 2 / 3 / nsig,
        };
        if let Some(n) = header.frames {
            if bytes_for(n) > len {
                return Err(SignalError::format(
                    &dat_path,
                    format!(
                        "truncated: the header says {n} samples per signal, the file holds {held}"
                    ),
                ));
            }
        }
        let frames = header.frames.unwrap_or(held);
        if frames == 0 {
            return Err(SignalError::Empty { path: dat_path });
        }
        Ok(Self {
            info: SignalInfo {
                path: hea.clone(),
                rate: Some(header.fs),
                channels: header
                    .signals
                    .iter()
                    .map(|s| s.description.clone())
                    .collect(),
                frames: Some(frames),
                format: format!("WFDB format {} {} Hz", header.format.code(), header.fs),
            },
            last: vec![0.0; header.signals.len()],
            header,
            dat_path,
            file: BufReader::new(file),
            queue: Default::default(),
            left: Some(frames),
            buf: Vec::new(),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Decodes at least `n` more digital samples into the queue (fewer at the end).
    fn fill(&mut self, n: usize) -> Result<(), SignalError> {
        let need = n.saturating_sub(self.queue.len());
        if need == 0 {
            return Ok(());
        }
        let bytes = match self.header.format {
            Format::F16 => need * 2,
            Format::F212 => need.div_ceil(2) * 3,
        };
        self.buf.resize(bytes, 0);
        let mut got = 0;
        while got < bytes {
            let r = self
                .file
                .read(&mut self.buf[got..])
                .map_err(|e| SignalError::io(&self.dat_path, e))?;
            if r == 0 {
                break;
            }
            got += r;
        }
        match self.header.format {
            Format::F16 => {
                for b in self.buf[..got - got % 2].chunks_exact(2) {
                    self.queue
                        .push_back(i16::from_le_bytes([b[0], b[1]]) as i32);
                }
            }
            Format::F212 => {
                let whole = got - got % 3;
                for b in self.buf[..whole].chunks_exact(3) {
                    let (s0, s1) = unpack212([b[0], b[1], b[2]]);
                    self.queue.push_back(s0);
                    self.queue.push_back(s1);
                }
                // A final sample stored alone in two bytes.
                if got % 3 == 2 {
                    let b = &self.buf[whole..whole + 2];
                    self.queue.push_back(unpack212([b[0], b[1], 0]).0);
                }
            }
        }
        Ok(())
    }
}

/// Two 12-bit two's-complement samples from 3 bytes (format 212).
pub fn unpack212(b: [u8; 3]) -> (i32, i32) {
    let s0 = (b[0] as i32) | (((b[1] & 0x0f) as i32) << 8);
    let s1 = (b[2] as i32) | (((b[1] & 0xf0) as i32) << 4);
    let sign = |v: i32| if v >= 2048 { v - 4096 } else { v };
    (sign(s0), sign(s1))
}

/// Packs two 12-bit samples (-2048..=2047) into 3 bytes (format 212).
pub fn pack212(s0: i32, s1: i32) -> [u8; 3] {
    let (a, b) = ((s0 & 0xfff) as u16, (s1 & 0xfff) as u16);
    [
        (a & 0xff) as u8,
        (((a >> 8) & 0x0f) | ((b >> 4) & 0xf0)) as u8,
        (b & 0xff) as u8,
    ]
}

impl SignalReader for WfdbReader {
    fn info(&self) -> &SignalInfo {
        &self.info
    }

    fn read(&mut self, max_frames: usize, out: &mut Vec<f32>) -> Result<usize, SignalError> {
        let nsig = self.header.signals.len();
        let frames = match self.left {
            Some(l) => (max_frames as u64).min(l) as usize,
            None => max_frames,
        };
        self.fill(frames * nsig)?;
        let n = (self.queue.len() / nsig).min(frames);
        if n < frames && self.left.is_some() {
            return Err(SignalError::format(
                &self.dat_path,
                "ends before the header's sample count: truncated",
            ));
        }
        let invalid = self.header.format.invalid();
        for _ in 0..n {
            for (c, spec) in self.header.signals.iter().enumerate() {
                let d = self.queue.pop_front().unwrap_or(invalid);
                if d != invalid {
                    self.last[c] = ((d - spec.baseline) as f64 / spec.gain) as f32;
                }
                out.push(self.last[c]);
            }
        }
        if let Some(l) = &mut self.left {
            *l -= n as u64;
        }
        Ok(n)
    }
}

/// Writes a WFDB record (`<dir>/<name>.hea` + `.dat`) of digital samples, one `Vec`
/// per signal; physical = (digital - baseline) / gain. For tests and for exporting.
pub fn write_record(
    dir: &Path,
    name: &str,
    format: Format,
    fs: f64,
    signals: &[Vec<i32>],
    specs: &[SignalSpec],
) -> std::io::Result<()> {
    let n = signals.first().map_or(0, Vec::len);
    let dat = format!("{name}.dat");
    let mut hea = format!("{name} {} {fs} {n}\n", signals.len());
    for (s, spec) in signals.iter().zip(specs) {
        let init = s.first().copied().unwrap_or(0);
        let checksum = s.iter().fold(0i32, |a, &v| a.wrapping_add(v)) as i16;
        let bits = if format == Format::F212 { 12 } else { 16 };
        hea += &format!(
            "{dat} {} {}({})/{} {bits} 0 {init} {checksum} 0 {}\n",
            format.code(),
            spec.gain,
            spec.baseline,
            spec.units,
            spec.description
        );
    }
    std::fs::write(dir.join(format!("{name}.hea")), hea)?;
    let mut w = BufWriter::new(File::create(dir.join(&dat))?);
    let inter = (0..n).flat_map(|i| signals.iter().map(move |s| s[i]));
    match format {
        Format::F16 => {
            for v in inter {
                w.write_all(&(v as i16).to_le_bytes())?;
            }
        }
        Format::F212 => {
            let v: Vec<i32> = inter.collect();
            for p in v.chunks(2) {
                let b = pack212(p[0], p.get(1).copied().unwrap_or(0));
                // An odd count ends with the first sample's two bytes only.
                w.write_all(if p.len() == 2 { &b } else { &b[..2] })?;
            }
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::signal::read_all;

    #[test]
    fn format_212_packs_as_the_wfdb_spec_says() {
        // 1 = 0x001, -1 = 0xfff: byte 0 = low 8 bits of the first, byte 1 = high nibble
        // of the second | high nibble of the first, byte 2 = low 8 bits of the second.
        assert_eq!(pack212(1, -1), [0x01, 0xf0, 0xff]);
        assert_eq!(unpack212([0x01, 0xf0, 0xff]), (1, -1));
        assert_eq!(pack212(2047, -2048), [0xff, 0x87, 0x00]);
        assert_eq!(unpack212([0xff, 0x87, 0x00]), (2047, -2048));
    }

    #[test]
    fn reads_a_hand_written_212_record_in_physical_units() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("rec.hea"),
            "# a comment\nrec 2 360 3\nrec.dat 212 200(0)/mV 12 0 0 0 0 MLII\n\
             rec.dat 212 100(10)/mV 12 0 0 0 0 V1\n",
        )
        .unwrap();
        // Frames (200, 110), (-100, 10), (0, -90) as pairs of 12-bit samples.
        let bytes = [0xc8, 0x00, 0x6e, 0x9c, 0x0f, 0x0a, 0x00, 0xf0, 0xa6];
        std::fs::write(dir.path().join("rec.dat"), bytes).unwrap();
        let mut r = WfdbReader::open(&dir.path().join("rec")).unwrap();
        assert_eq!(r.info().rate, Some(360.0));
        assert_eq!(r.info().channels, ["MLII", "V1"]);
        assert_eq!(r.info().frames, Some(3));
        let ch = read_all(&mut r).unwrap();
        assert_eq!(ch[0], [1.0, -0.5, 0.0]);
        assert_eq!(ch[1], [1.0, 0.0, -1.0]);
    }

    #[test]
    fn reads_format_16_with_defaults_and_holds_invalid_samples() {
        let dir = tempfile::tempdir().unwrap();
        // No gain given: 200 per mV; baseline = ADC zero (0).
        std::fs::write(dir.path().join("r16.hea"), "r16 1 250\nr16.dat 16\n").unwrap();
        let vals: [i16; 4] = [400, -200, -32768, 100];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.path().join("r16.dat"), bytes).unwrap();
        let mut r = WfdbReader::open(&dir.path().join("r16")).unwrap();
        assert_eq!(r.info().frames, Some(4));
        assert_eq!(read_all(&mut r).unwrap()[0], [2.0, -1.0, -1.0, 0.5]);
    }

    #[test]
    fn writer_and_reader_round_trip_odd_lengths() {
        let dir = tempfile::tempdir().unwrap();
        for (fmt, lo, hi) in [(Format::F212, -2047, 2047), (Format::F16, -32767, 32767)] {
            let a: Vec<i32> = (0..1001).map(|i| lo + (i * 7919) % (hi - lo)).collect();
            let b: Vec<i32> = a.iter().rev().copied().collect();
            let spec = |d: &str, base| SignalSpec {
                gain: 50.0,
                baseline: base,
                units: "mV".into(),
                description: d.into(),
            };
            for (name, sigs) in [
                ("one", vec![a.clone()]),
                ("two", vec![a.clone(), b.clone()]),
            ] {
                let specs: Vec<SignalSpec> =
                    (0..sigs.len()).map(|i| spec(&format!("s{i}"), 3)).collect();
                write_record(dir.path(), name, fmt, 500.0, &sigs, &specs).unwrap();
                let mut r = WfdbReader::open(&dir.path().join(name)).unwrap();
                let ch = read_all(&mut r).unwrap();
                for (got, want) in ch.iter().zip(&sigs) {
                    let want: Vec<f32> = want
                        .iter()
                        .map(|&d| ((d - 3) as f64 / 50.0) as f32)
                        .collect();
                    assert_eq!(got, &want, "{fmt:?} {name}");
                }
            }
        }
    }

    #[test]
    fn truncated_and_unsupported_records_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.hea"), "t 1 250 100\nt.dat 212\n").unwrap();
        std::fs::write(dir.path().join("t.dat"), [0u8; 30]).unwrap();
        let e = WfdbReader::open(&dir.path().join("t"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("truncated") && e.contains("100"), "{e}");
        std::fs::write(dir.path().join("u.hea"), "u 1 250 100\nu.dat 310\n").unwrap();
        let e = WfdbReader::open(&dir.path().join("u"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("format 310 is not supported"), "{e}");
    }
}
