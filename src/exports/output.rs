//! Where a run's objects go: the [`Outputs`] a run writes through (plain
//! [`S3Outputs`], or the worker's, which records each upload on the export
//! and checks the lease), and the [`Files`] a ZIP or multi-object type
//! opens one at a time.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::ExportError;
use crate::encode::zip::ZipOut;
use crate::encode::{CsvOut, ResumeFrom};
use crate::sink::{BoxRead, BoxWrite, DestKind, ObjectSpec, PartWriter, Sinks, Upload, Uploaded};

/// Where a run's objects go.
#[async_trait]
pub trait Outputs: Send + Sync {
    /// Start an object in `dest`.
    async fn open(
        &self,
        dest: DestKind,
        spec: &ObjectSpec,
    ) -> Result<(BoxWrite, Upload), ExportError>;
    /// Called before each commit (the worker: is the lease still ours?).
    async fn before_commit(&self) -> Result<(), ExportError> {
        Ok(())
    }
    /// May a failed run still delete what it committed? Only while it
    /// holds its lease: after that the export, and its keys, are another
    /// attempt's (spec: exports.md, Object ownership).
    async fn still_owner(&self) -> bool {
        true
    }
    /// Resolves when the run must stop (lease lost, shutdown hand-back).
    async fn stopped(&self) -> ExportError {
        std::future::pending().await
    }
    /// A resumable single-CSV object (spec: exports.md, Resumable): parts
    /// cut at row boundaries and checkpointed, continued from the export's
    /// last checkpoint when it has one. `None`: this output does not
    /// resume (the caller uses [`Outputs::open`]).
    async fn open_parts(
        &self,
        _dest: DestKind,
        _spec: &ObjectSpec,
    ) -> Result<Option<Parted>, ExportError> {
        Ok(None)
    }
    /// A committed object's body, streamed (for the TMOL publish).
    async fn read(&self, obj: &Uploaded) -> Result<BoxRead, ExportError>;
    /// Delete a committed object (a later object of the run failed).
    async fn delete(&self, obj: &Uploaded) -> Result<(), ExportError>;
    /// Is the optional destination configured (TMOL publish)?
    fn configured(&self, dest: DestKind) -> bool;
}

/// Plain S3 outputs: the buckets and credentials of [`Sinks`].
#[derive(Clone)]
pub struct S3Outputs {
    pub sinks: Sinks,
}

#[async_trait]
impl Outputs for S3Outputs {
    async fn open(
        &self,
        dest: DestKind,
        spec: &ObjectSpec,
    ) -> Result<(BoxWrite, Upload), ExportError> {
        let role = self.sinks.role_arn_for(dest);
        let d = self
            .sinks
            .destination(dest)
            .await
            .map_err(|e| e.with_role(role))?;
        // A partner destination fails mostly on the assumed role: name it.
        Ok(self
            .sinks
            .open_s3(&d, spec)
            .await
            .map_err(|e| e.with_role(role))?)
    }
    async fn read(&self, obj: &Uploaded) -> Result<BoxRead, ExportError> {
        let bucket = obj.bucket.as_deref().unwrap_or_default();
        Ok(self.sinks.read_object(bucket, &obj.key).await?)
    }
    async fn delete(&self, obj: &Uploaded) -> Result<(), ExportError> {
        let bucket = obj.bucket.as_deref().unwrap_or_default();
        Ok(self.sinks.delete_object(bucket, &obj.key).await?)
    }
    fn configured(&self, dest: DestKind) -> bool {
        let b = self.sinks.buckets();
        match dest {
            DestKind::Sfmc => b.sfmc.is_some() && b.sfmc_role_arn.is_some(),
            DestKind::Tmol => b.tmol.is_some() && b.tmol_role_arn.is_some(),
            _ => true,
        }
    }
}

/// A resumable object as [`Outputs::open_parts`] gives it.
pub struct Parted {
    pub writer: PartWriter,
    pub upload: Upload,
    /// Where the run continues (`None`: from the start).
    pub resume: Option<ResumeFrom>,
    /// Cancelled when the run must stop at its next part boundary.
    pub stop: CancellationToken,
}

/// The files of a ZIP or multi-object export, opened one at a time.
#[async_trait]
pub trait Files: Send {
    /// Close the current file and start the next: a ZIP entry name, or an
    /// object key. The writer has no header yet.
    async fn next(&mut self, name: &str) -> Result<&mut CsvOut, ExportError>;
    /// The file opened last.
    #[allow(clippy::result_large_err)] // ExportError as everywhere here; rare path
    fn current(&mut self) -> Result<&mut CsvOut, ExportError>;
}

pub(super) fn no_file() -> ExportError {
    ExportError::Data {
        message: "a row was written before any file was opened".into(),
        payload: None,
    }
}

/// A ZIP's entries are its files.
#[async_trait]
impl Files for ZipOut {
    async fn next(&mut self, name: &str) -> Result<&mut CsvOut, ExportError> {
        Ok(ZipOut::next(self, name).await?)
    }
    #[allow(clippy::result_large_err)]
    fn current(&mut self) -> Result<&mut CsvOut, ExportError> {
        ZipOut::current(self).ok_or_else(no_file)
    }
}
