//! Where a batch run keeps its outputs and markers: a local folder or an object store
//! (S3, GCS, Azure) through `object_store`, driven from blocking code by a small
//! runtime. Every put is atomic (a local file appears under its name only complete),
//! markers are create-only, and large files go up in parts, aborted on failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::config::hex;
use crate::error::{BatchError, Result};

/// Files at least this large go up by multipart upload, in parts of this size (S3's
/// parts must be at least 5 MiB).
pub const PART_SIZE: usize = 8 << 20;

/// A stored object's size and modification time (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub size: u64,
    pub mtime: String,
}

/// One stored file as uploaded: its name under the input's folder, size and SHA-256.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

pub struct Store {
    inner: Arc<dyn ObjectStore>,
    root: Key,
    url: String,
    rt: tokio::runtime::Runtime,
}

impl Store {
    /// Opens `url`: a local path or `file://` URL (the folder is created), `memory://`,
    /// `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`. Cloud
    /// credentials and endpoints come from the environment, as each cloud's tools read
    /// them (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`, `GOOGLE_SERVICE_ACCOUNT`, ...).
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, true)
    }

    /// [`Store::open`] for reading only: a local folder must exist already.
    pub fn open_existing(url: &str) -> Result<Self> {
        Self::open_with(url, false)
    }

    fn open_with(url: &str, create: bool) -> Result<Self> {
        let bad = |why: String| BatchError::BadOption { name: "out", why };
        let (inner, root): (Arc<dyn ObjectStore>, Key) = match scheme(url) {
            None | Some("file") => {
                let dir = local_path(url);
                if create {
                    std::fs::create_dir_all(&dir).map_err(BatchError::io(&dir))?;
                }
                let dir = dir.canonicalize().map_err(BatchError::io(&dir))?;
                let fs = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(BatchError::store(dir.display().to_string()))?;
                (Arc::new(fs), Key::default())
            }
            Some("memory") => (Arc::new(InMemory::new()), prefix_of(url)?),
            Some("s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss") => {
                (cloud(url)?, prefix_of(url)?)
            }
            Some(other) => {
                return Err(bad(format!(
                    "`{url}`: unsupported scheme `{other}://`; use a local path, file://, s3://, gs:// or az://"
                )))
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BatchError::io("tokio runtime"))?;
        Ok(Self {
            inner,
            root,
            url: url.trim_end_matches('/').to_string(),
            rt,
        })
    }

    /// The store's URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, rel: &str) -> Key {
        rel.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.root.clone(), |k, p| k.clone().join(p))
    }

    fn what(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    /// The object's bytes, or `None` when there is none.
    pub fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(rel);
        self.rt.block_on(async {
            match self.inner.get(&key).await {
                Ok(r) => Ok(Some(
                    r.bytes()
                        .await
                        .map_err(BatchError::store(self.what(rel)))?
                        .to_vec(),
                )),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(BatchError::store(self.what(rel))(e)),
            }
        })
    }

    pub fn head(&self, rel: &str) -> Result<Option<Meta>> {
        let key = self.key(rel);
        match self.rt.block_on(self.inner.head(&key)) {
            Ok(m) => Ok(Some(Meta {
                size: m.size,
                mtime: m.last_modified.to_rfc3339(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(BatchError::store(self.what(rel))(e)),
        }
    }

    pub fn exists(&self, rel: &str) -> Result<bool> {
        Ok(self.head(rel)?.is_some())
    }

    /// Writes the object whole, replacing any.
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let key = self.key(rel);
        self.rt
            .block_on(self.inner.put(&key, PutPayload::from(bytes)))
            .map_err(BatchError::store(self.what(rel)))?;
        Ok(())
    }

    /// Removes the object; none there is fine.
    pub fn delete(&self, rel: &str) -> Result<()> {
        let key = self.key(rel);
        match self.rt.block_on(self.inner.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(BatchError::store(self.what(rel))(e)),
        }
    }

    /// Writes the object only if there is none: `true` when this call created it,
    /// `false` when it was there already (another worker got there first).
    pub fn create(&self, rel: &str, bytes: Vec<u8>) -> Result<bool> {
        let key = self.key(rel);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .rt
            .block_on(self.inner.put_opts(&key, PutPayload::from(bytes), opts))
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(BatchError::store(self.what(rel))(e)),
        }
    }

    /// Uploads a local file as `rel` and returns its size and SHA-256, hashed as it is
    /// read. Files of [`PART_SIZE`] or more go up in parts; a failed upload is aborted,
    /// so no part of it stays.
    pub fn upload(&self, rel: &str, file: &Path) -> Result<Stored> {
        let key = self.key(rel);
        let name = rel.rsplit('/').next().unwrap_or(rel).to_string();
        let mut f = std::fs::File::open(file).map_err(BatchError::io(file))?;
        let len = f.metadata().map_err(BatchError::io(file))?.len();
        let mut h = Sha256::new();
        if len < PART_SIZE as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            f.read_to_end(&mut bytes).map_err(BatchError::io(file))?;
            h.update(&bytes);
            let size = bytes.len() as u64;
            self.put(rel, bytes)?;
            return Ok(Stored {
                name,
                size,
                sha256: hex(&h.finalize()),
            });
        }
        let size = self.rt.block_on(async {
            let upload = self
                .inner
                .put_multipart(&key)
                .await
                .map_err(BatchError::store(self.what(rel)))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut buf = vec![0u8; PART_SIZE];
            let mut size = 0u64;
            let sent: Result<()> = async {
                loop {
                    let n = f.read(&mut buf).map_err(BatchError::io(file))?;
                    if n == 0 {
                        return Ok(());
                    }
                    h.update(&buf[..n]);
                    size += n as u64;
                    w.wait_for_capacity(4)
                        .await
                        .map_err(BatchError::store(self.what(rel)))?;
                    w.write(&buf[..n]);
                }
            }
            .await;
            match sent {
                Ok(()) => {
                    w.finish()
                        .await
                        .map_err(BatchError::store(self.what(rel)))?;
                    Ok(size)
                }
                Err(e) => {
                    let _ = w.abort().await;
                    Err(e)
                }
            }
        })?;
        Ok(Stored {
            name,
            size,
            sha256: hex(&h.finalize()),
        })
    }

    /// Copies the object to a local file (written under `to`, which the caller owns).
    pub fn download(&self, rel: &str, to: &Path) -> Result<()> {
        use std::io::Write;
        let key = self.key(rel);
        let mut out = std::fs::File::create(to).map_err(BatchError::io(to))?;
        self.rt.block_on(async {
            let r = self
                .inner
                .get(&key)
                .await
                .map_err(BatchError::store(self.what(rel)))?;
            let mut stream = r.into_stream();
            while let Some(chunk) = stream
                .try_next()
                .await
                .map_err(BatchError::store(self.what(rel)))?
            {
                out.write_all(&chunk).map_err(BatchError::io(to))?;
            }
            Ok::<_, BatchError>(())
        })?;
        out.sync_all().map_err(BatchError::io(to))
    }

    /// Every object under `rel` (recursively), by its name relative to `rel`, sorted.
    pub fn list(&self, rel: &str) -> Result<Vec<(String, Meta)>> {
        let prefix = self.key(rel);
        let start = prefix.as_ref().len();
        let mut all: Vec<(String, Meta)> = self
            .rt
            .block_on(self.inner.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map_err(BatchError::store(self.what(rel)))?
            .into_iter()
            .map(|m| {
                let name = m.location.as_ref()[start..]
                    .trim_start_matches('/')
                    .to_string();
                let meta = Meta {
                    size: m.size,
                    mtime: m.last_modified.to_rfc3339(),
                };
                (name, meta)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }
}

/// `s3` of `s3://bucket/x`; `None` for a plain path.
pub(crate) fn scheme(url: &str) -> Option<&str> {
    let (s, _) = url.split_once("://")?;
    (s.len() > 1 && s.chars().all(|c| c.is_ascii_alphanumeric())).then_some(s)
}

fn local_path(url: &str) -> PathBuf {
    PathBuf::from(url.strip_prefix("file://").unwrap_or(url))
}

/// The object path part of `scheme://bucket/prefix`.
fn prefix_of(url: &str) -> Result<Key> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
    Key::parse(path.trim_end_matches('/')).map_err(|e| BatchError::BadOption {
        name: "out",
        why: format!("`{url}`: {e}"),
    })
}

/// An S3, GCS or Azure store for the URL's bucket, configured from the environment.
fn cloud(url: &str) -> Result<Arc<dyn ObjectStore>> {
    let fail = BatchError::store(url.to_string());
    Ok(match scheme(url) {
        Some("s3" | "s3a") => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .build()
                .map_err(fail)?,
        ),
        Some("gs") => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .build()
                .map_err(fail)?,
        ),
        _ => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .build()
                .map_err(fail)?,
        ),
    })
}

/// Splits an input URI into the store holding it and the object's name in that store:
/// `s3://b/dir/x.mp4` is (`s3://b/dir`, `x.mp4`).
pub fn split_object(uri: &str) -> (&str, &str) {
    match uri.rsplit_once('/') {
        Some((dir, name))
            if scheme(uri).is_none() || dir.contains("://") && !dir.ends_with(":/") =>
        {
            (dir, name)
        }
        _ => (uri, ""),
    }
}
