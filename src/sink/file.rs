//! Local file sink for the one-shot CLI: write `<path>.partial`, rename into
//! place on commit, delete on abort.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{pipe, BoxWrite, SinkError, Upload, Uploaded};

pub(super) async fn open(path: &Path) -> Result<(BoxWrite, Upload), SinkError> {
    let final_path = path.to_path_buf();
    let mut partial = final_path.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = tokio::fs::File::create(&partial).await?;
    let (writer, mut reader) = pipe();
    let (commit_tx, commit_rx) = oneshot::channel::<()>();
    let cancel = CancellationToken::new();
    let bytes = Arc::new(AtomicU64::new(0));
    let (c, b) = (cancel.clone(), bytes.clone());
    let task = tokio::spawn(async move {
        let mut hash = Sha256::new();
        let result: Result<(), SinkError> = async {
            let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = tokio::select! {
                    biased;
                    _ = c.cancelled() => return Err(SinkError::Aborted),
                    r = reader.read(&mut buf) => r?,
                };
                if n == 0 {
                    break;
                }
                b.fetch_add(n as u64, Ordering::Relaxed);
                hash.update(&buf[..n]);
                file.write_all(&buf[..n]).await?;
            }
            tokio::select! {
                biased;
                _ = c.cancelled() => return Err(SinkError::Aborted),
                r = commit_rx => r.map_err(|_| SinkError::Aborted)?,
            }
            file.flush().await?;
            file.get_ref().sync_all().await?;
            tokio::fs::rename(&partial, &final_path).await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(Uploaded {
                bucket: None,
                key: final_path.display().to_string(),
                bytes: b.load(Ordering::Relaxed),
                sha256: hex::encode(hash.finalize()),
            }),
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(e)
            }
        }
    });
    Ok((
        Box::new(writer),
        Upload::new(commit_tx, cancel, task, bytes, None),
    ))
}
