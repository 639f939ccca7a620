//! CSV/TSV recordings through the `csv` crate: one column per lead, header optional
//! (a first row that is not all numbers is the header), an optional time column whose
//! spacing gives the rate when `--rate` is not set. Lines starting with `#` are comments.

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;

use super::{OpenOptions, SignalError, SignalInfo, SignalReader};

const TIME_NAMES: [&str; 8] = [
    "time",
    "t",
    "time_s",
    "seconds",
    "sec",
    "timestamp",
    "elapsed time",
    "time (s)",
];

/// Rows read ahead to measure the rate from a time column.
const RATE_ROWS: usize = 2048;

pub struct CsvReader {
    info: SignalInfo,
    records: csv::StringRecordsIntoIter<File>,
    /// Data columns to keep, in order.
    keep: Vec<usize>,
    width: usize,
    pending: VecDeque<Vec<f32>>,
    /// 1-based line of the next record (for error messages).
    line: u64,
}

fn parse(field: &str) -> Option<f64> {
    field.trim().parse::<f64>().ok()
}

impl CsvReader {
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self, SignalError> {
        let file = File::open(path).map_err(|e| SignalError::io(path, e))?;
        let tsv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
        let mut records = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(if tsv { b'\t' } else { b',' })
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(file)
            .into_records();
        let bad = |line: u64, e: csv::Error| {
            SignalError::format(path, format!("line {line}: not valid CSV ({e})"))
        };
        let first = match records.next() {
            None => {
                return Err(SignalError::Empty {
                    path: path.to_path_buf(),
                })
            }
            Some(r) => r.map_err(|e| bad(1, e))?,
        };
        let width = first.len();
        let header = first.iter().any(|f| parse(f).is_none());
        let names: Vec<String> = if header {
            first
                .iter()
                .map(|f| f.trim_matches(|c| c == '\'' || c == '"').to_string())
                .collect()
        } else {
            (0..width).map(|i| format!("col{i}")).collect()
        };
        let time_col = if header {
            names
                .iter()
                .position(|n| TIME_NAMES.contains(&n.to_ascii_lowercase().as_str()))
        } else {
            None
        };
        let keep: Vec<usize> = match &opts.column {
            Some(c) => {
                let idx = names
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(c))
                    .or_else(|| c.parse::<usize>().ok().filter(|&i| i < width));
                match idx {
                    Some(i) => vec![i],
                    None => {
                        return Err(SignalError::Options {
                            path: path.to_path_buf(),
                            msg: format!(
                                "no column `{c}`; columns: {} (or a 0-based index)",
                                names.join(", ")
                            ),
                        })
                    }
                }
            }
            None => (0..width).filter(|&i| Some(i) != time_col).collect(),
        };
        if keep.is_empty() {
            return Err(SignalError::format(path, "no data column besides time"));
        }
        let mut reader = Self {
            info: SignalInfo {
                path: path.to_path_buf(),
                rate: opts.rate,
                channels: keep.iter().map(|&i| names[i].clone()).collect(),
                frames: None,
                format: "CSV".into(),
            },
            records,
            keep,
            width,
            pending: VecDeque::new(),
            line: 1,
        };
        if !header {
            let row = reader.row(&first)?;
            reader.pending.push_back(row);
        }
        if let Some(tc) = time_col {
            // Read ahead to measure the spacing of the time column.
            let mut times = Vec::new();
            while reader.pending.len() < RATE_ROWS {
                let Some(rec) = reader.next_record()? else {
                    break;
                };
                // The row's width is checked first: a short row has no time field.
                let row = reader.row(&rec)?;
                let t = parse(&rec[tc]).ok_or_else(|| {
                    SignalError::format(
                        path,
                        format!("line {}: time `{}` is not a number", reader.line, &rec[tc]),
                    )
                })?;
                times.push(t);
                reader.pending.push_back(row);
            }
            if reader.pending.is_empty() {
                return Err(SignalError::Empty {
                    path: path.to_path_buf(),
                });
            }
            if times.len() < 2 || times[times.len() - 1] <= times[0] {
                if opts.rate.is_none() {
                    return Err(SignalError::Options {
                        path: path.to_path_buf(),
                        msg: "cannot tell the sample rate from the time column; give `rate`".into(),
                    });
                }
            } else {
                let r = (times.len() - 1) as f64 / (times[times.len() - 1] - times[0]);
                // Times printed with few decimals: snap to a whole rate when close.
                let measured = if (r - r.round()).abs() < 1e-3 * r {
                    r.round()
                } else {
                    r
                };
                if let Some(given) = opts.rate {
                    if (given - measured).abs() > 1e-3 * measured {
                        return Err(SignalError::Options {
                            path: path.to_path_buf(),
                            msg: format!(
                                "the time column says {measured} Hz but `rate` says {given} Hz; drop `rate`"
                            ),
                        });
                    }
                }
                reader.info.rate = Some(opts.rate.unwrap_or(measured));
            }
        }
        if reader.pending.is_empty() {
            if let Some(rec) = reader.next_record()? {
                let row = reader.row(&rec)?;
                reader.pending.push_back(row);
            } else {
                return Err(SignalError::Empty {
                    path: path.to_path_buf(),
                });
            }
        }
        Ok(reader)
    }

    fn next_record(&mut self) -> Result<Option<csv::StringRecord>, SignalError> {
        match self.records.next() {
            None => Ok(None),
            Some(Ok(r)) => {
                self.line += 1;
                Ok(Some(r))
            }
            Some(Err(e)) => Err(SignalError::format(
                &self.info.path,
                format!("line {}: not valid CSV ({e})", self.line),
            )),
        }
    }

    fn row(&self, rec: &csv::StringRecord) -> Result<Vec<f32>, SignalError> {
        let line = self.line;
        if rec.len() != self.width {
            return Err(SignalError::format(
                &self.info.path,
                format!(
                    "line {line}: {} fields, the first row has {} (truncated or ragged file)",
                    rec.len(),
                    self.width
                ),
            ));
        }
        self.keep
            .iter()
            .map(|&i| {
                let f = &rec[i];
                if f.eq_ignore_ascii_case("nan") || f.is_empty() {
                    return Ok(f32::NAN);
                }
                parse(f).map(|v| v as f32).ok_or_else(|| {
                    SignalError::format(
                        &self.info.path,
                        format!("line {line}: `{f}` is not a number"),
                    )
                })
            })
            .collect()
    }
}

impl SignalReader for CsvReader {
    fn info(&self) -> &SignalInfo {
        &self.info
    }

    fn read(&mut self, max_frames: usize, out: &mut Vec<f32>) -> Result<usize, SignalError> {
        let mut n = 0;
        while n < max_frames {
            if let Some(row) = self.pending.pop_front() {
                out.extend(row);
                n += 1;
                continue;
            }
            let Some(rec) = self.next_record()? else {
                break;
            };
            let row = self.row(&rec)?;
            out.extend(row);
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::signal::read_all;

    fn open(text: &str, opts: &OpenOptions) -> Result<CsvReader, SignalError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        std::fs::write(&p, text).unwrap();
        // The reader keeps the file open; the folder may go.
        CsvReader::open(&p, opts)
    }

    #[test]
    fn header_time_column_and_rate() {
        let mut text = "Time, I , II\n".to_string();
        for i in 0..500 {
            text += &format!("{:.3},{},{}\n", i as f64 / 360.0, i, -i);
        }
        let mut r = open(&text, &OpenOptions::default()).unwrap();
        assert_eq!(r.info().rate, Some(360.0));
        assert_eq!(r.info().channels, ["I", "II"]);
        let ch = read_all(&mut r).unwrap();
        assert_eq!(ch[1][..3], [0.0, -1.0, -2.0]);
        assert_eq!(ch[0].len(), 500);
        let opts = OpenOptions {
            column: Some("ii".into()),
            ..Default::default()
        };
        let mut r = open(&text, &opts).unwrap();
        assert_eq!(
            read_all(&mut r).unwrap(),
            vec![(0..500).map(|i| -i as f32).collect::<Vec<_>>()]
        );
    }

    #[test]
    fn no_header_and_comments() {
        let opts = OpenOptions {
            rate: Some(100.0),
            ..Default::default()
        };
        let mut r = open("# exported\n1.5,2\n3,4e-1\n", &opts).unwrap();
        assert_eq!(r.info().channels, ["col0", "col1"]);
        assert_eq!(
            read_all(&mut r).unwrap(),
            vec![vec![1.5, 3.0], vec![2.0, 0.4]]
        );
    }
}
