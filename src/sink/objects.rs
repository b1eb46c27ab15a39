//! Reading back, listing and deleting objects: the TMOL publish streams a
//! committed object into a partner bucket, `waitlist` reads the wave files,
//! and a failed multi-object export removes the objects it had completed.

use std::pin::Pin;

use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::{SinkError, Sinks};

/// A boxed, streamed object body.
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;

/// An object body that fails instead of ending early: a connection cut
/// mid-body must not pass for the end of the object (the TMOL copy and the
/// waitlist's wave files would be short).
struct LengthChecked<R> {
    inner: R,
    read: u64,
    expected: Option<u64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for LengthChecked<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let n = (buf.filled().len() - before) as u64;
            self.read += n;
            if n == 0 && self.expected.is_some_and(|e| e != self.read) {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "object body ended after {} of {} bytes",
                        self.read,
                        self.expected.unwrap_or_default()
                    ),
                )));
            }
        }
        r
    }
}

impl Sinks {
    /// The object's body as a stream: bytes arrive as S3 sends them, never
    /// one whole-object buffer.
    pub async fn read_object(&self, bucket: &str, key: &str) -> Result<BoxRead, SinkError> {
        let client = self.client_for_bucket(bucket).await;
        let out = client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                SinkError::remote(&format!("read object in bucket {bucket}"), bucket, &e)
            })?;
        let expected = out.content_length().and_then(|n| u64::try_from(n).ok());
        Ok(Box::pin(LengthChecked {
            inner: out.body.into_async_read(),
            read: 0,
            expected,
        }))
    }

    /// Delete one object; a missing object counts as deleted.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), SinkError> {
        let client = self.client_for_bucket(bucket).await;
        client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                SinkError::remote(&format!("delete object in bucket {bucket}"), bucket, &e)
            })?;
        Ok(())
    }

    /// Every key under `prefix` in `bucket` (paginated, in key order).
    pub async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, SinkError> {
        let client = self.client_for_bucket(bucket).await;
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| SinkError::remote(&format!("list bucket {bucket}"), bucket, &e))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(keys)
    }

    /// The role assumed for a partner destination, to name it in errors.
    pub fn role_arn_for(&self, kind: super::DestKind) -> Option<&str> {
        let b = &self.inner.buckets;
        match kind {
            super::DestKind::Sfmc => b.sfmc_role_arn.as_deref(),
            super::DestKind::Tmol => b.tmol_role_arn.as_deref(),
            _ => None,
        }
    }
}
