//! Where per-item records (frames' or windows') go: a JSON-lines file written under a
//! temporary name, or a channel.

use crossbeam_channel::Sender;

use camstream_media::io::{StreamFile, TempPath};

use crate::PipelineError;

/// Where per-item records go, in order.
pub trait RecordSink<R>: Send {
    fn record(&mut self, record: &R) -> Result<(), PipelineError>;
    /// Completes the output (a file's caller renames it into place).
    fn finish(&mut self) -> Result<(), PipelineError>;
}

/// Records as JSON lines in a file, written under a temporary name until committed.
pub struct JsonLines {
    file: Option<StreamFile>,
    done: Option<TempPath>,
}

impl JsonLines {
    pub fn create(path: &std::path::Path) -> Result<Self, PipelineError> {
        Ok(Self {
            file: Some(StreamFile::create(path)?),
            done: None,
        })
    }

    /// The complete file, still under its temporary name (for a [`Staged`] set).
    ///
    /// [`Staged`]: camstream_media::io::Staged
    pub fn finish_staged(mut self) -> Result<TempPath, PipelineError> {
        RecordSink::<()>::finish(&mut self)?;
        self.done
            .take()
            .ok_or(PipelineError::ReceiverGone("records"))
    }

    /// Completes the file and renames it into place.
    pub fn commit(self) -> Result<std::path::PathBuf, PipelineError> {
        Ok(self.finish_staged()?.persist()?)
    }
}

impl<R: serde::Serialize> RecordSink<R> for JsonLines {
    fn record(&mut self, record: &R) -> Result<(), PipelineError> {
        if let Some(f) = &mut self.file {
            let mut line = camstream_core::record::to_line(record);
            line.push('\n');
            f.write(line.as_bytes())?;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<(), PipelineError> {
        if let Some(f) = self.file.take() {
            self.done = Some(f.finish_staged()?);
        }
        Ok(())
    }
}

/// Records to a channel.
impl<R: Clone + Send> RecordSink<R> for Sender<R> {
    fn record(&mut self, record: &R) -> Result<(), PipelineError> {
        self.send(record.clone())
            .map_err(|_| PipelineError::ReceiverGone("records"))
    }
    fn finish(&mut self) -> Result<(), PipelineError> {
        Ok(())
    }
}
