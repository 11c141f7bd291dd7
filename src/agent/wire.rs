//! Frames over tokio streams, for the host side: a reader that feeds the
//! pure decoder, a writer, and deadlines on both.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::error::{Error, ProtocolError, Result};
use super::protocol::{encode_to_vec, Decoder, Frame, DATA_CHUNK};

/// Reads whole frames from `inner`.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    inner: R,
    decoder: Decoder,
    buf: Box<[u8]>,
}

impl<R> FrameReader<R> {
    pub(crate) fn new(inner: R) -> FrameReader<R> {
        FrameReader::with_decoder(inner, Decoder::new())
    }

    /// Keeps bytes an earlier reader already took off the stream.
    pub(crate) fn with_decoder(inner: R, decoder: Decoder) -> FrameReader<R> {
        FrameReader {
            inner,
            decoder,
            buf: vec![0; DATA_CHUNK].into_boxed_slice(),
        }
    }

    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub(crate) fn into_parts(self) -> (R, Decoder) {
        (self.inner, self.decoder)
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// The next frame. Cancel-safe: bytes read are in the decoder before
    /// the future can be dropped at its next await.
    pub(crate) async fn read_frame(&mut self, during: &'static str) -> Result<Frame> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
            let n = self.inner.read(&mut self.buf).await?;
            if n == 0 {
                self.decoder.finish()?;
                return Err(Error::Closed { during });
            }
            self.decoder.feed(&self.buf[..n]);
        }
    }
}

/// Encodes and sends one frame.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> Result<()> {
    let bytes = encode_to_vec(frame)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// `fut`, or [`Error::Timeout`] once `deadline` passes.
pub(crate) async fn by<T>(
    deadline: Instant,
    during: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            during,
            after: started.elapsed(),
        }),
    }
}

/// `fut`, or [`Error::Timeout`] after `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    during: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    by(Instant::now() + limit, during, fut).await
}

/// The error for a frame that has no place here; an `Error` frame is the
/// agent's own report and becomes [`Error::Remote`].
pub(crate) fn unexpected(expected: &'static str, frame: Frame) -> Error {
    match frame {
        Frame::Error(e) => Error::Remote {
            kind: e.kind,
            message: e.message,
            errno: e.errno,
        },
        other => Error::Protocol(ProtocolError::Unexpected {
            expected,
            got: other.frame_type(),
        }),
    }
}
