//! A ZIP of CSV entries, streamed: each entry's CSV writer feeds a pipe,
//! and one task owns the `async_zip` streaming writer (which borrows itself
//! per entry, so it cannot be handed out) and copies each pipe into its
//! entry, in order, straight into the byte sink.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipEntryBuilder};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use super::{BoxWrite, CsvOut};

/// Pipe from one entry's CSV writer to the ZIP task.
const ENTRY_PIPE_BYTES: usize = 64 * 1024;

/// The entries of one ZIP, opened one at a time.
pub struct ZipOut {
    tx: Option<mpsc::Sender<(String, DuplexStream)>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    cur: Option<CsvOut>,
    names: Vec<String>,
    rows_total: Arc<AtomicU64>,
    rows: u64,
}

impl ZipOut {
    /// A ZIP written into `w`; every entry's rows are added to `rows_total`.
    pub fn start(w: BoxWrite, rows_total: Arc<AtomicU64>) -> Self {
        let (tx, rx) = mpsc::channel(1);
        Self {
            tx: Some(tx),
            task: Some(tokio::spawn(zip_task(w, rx))),
            cur: None,
            names: Vec::new(),
            rows_total,
            rows: 0,
        }
    }

    /// Close the current entry and start the next (a CSV without header).
    pub async fn next(&mut self, name: &str) -> std::io::Result<&mut CsvOut> {
        self.close_current().await?;
        let (w, r) = tokio::io::duplex(ENTRY_PIPE_BYTES);
        let sent = match &self.tx {
            Some(tx) => tx.send((name.to_string(), r)).await.is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.task_error().await.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "zip writer stopped")
            }));
        }
        self.names.push(name.to_string());
        Ok(self.cur.insert(CsvOut::with_progress(
            Box::new(w),
            b',',
            self.rows_total.clone(),
        )))
    }

    /// The entry opened last.
    pub fn current(&mut self) -> Option<&mut CsvOut> {
        self.cur.as_mut()
    }

    async fn close_current(&mut self) -> std::io::Result<()> {
        if let Some(out) = self.cur.take() {
            self.rows += out.finish().await?;
        }
        Ok(())
    }

    /// Close the last entry and the archive (central directory); returns
    /// the entry names and the row count.
    pub async fn finish(mut self) -> std::io::Result<(Vec<String>, u64)> {
        self.close_current().await?;
        self.tx.take();
        let task = self.task.take().expect("zip task present until finish");
        task.await
            .map_err(|e| std::io::Error::other(format!("zip task: {e}")))??;
        Ok((std::mem::take(&mut self.names), self.rows))
    }

    /// The ZIP task's own error when it stopped first.
    async fn task_error(&mut self) -> Option<std::io::Error> {
        self.tx.take();
        match self.task.take()?.await {
            Ok(Err(e)) => Some(e),
            _ => None,
        }
    }
}

impl Drop for ZipOut {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn zip_err(e: async_zip::error::ZipError) -> std::io::Error {
    std::io::Error::other(format!("zip: {e}"))
}

async fn zip_task(
    w: BoxWrite,
    mut rx: mpsc::Receiver<(String, DuplexStream)>,
) -> std::io::Result<()> {
    let mut zip = ZipFileWriter::new(w.compat_write());
    while let Some((name, reader)) = rx.recv().await {
        let mut entry = zip
            .write_entry_stream(ZipEntryBuilder::new(name.into(), Compression::Deflate))
            .await
            .map_err(zip_err)?;
        futures::io::copy(reader.compat(), &mut entry).await?;
        entry.close().await.map_err(zip_err)?;
    }
    let mut w = zip.close().await.map_err(zip_err)?.into_inner();
    w.shutdown().await?;
    Ok(())
}
