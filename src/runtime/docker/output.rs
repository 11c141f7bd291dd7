//! A container's output: read from the engine's log of the container, which
//! always holds everything since the container was created.

use std::time::Duration;

use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use super::connection::docker_error;
use super::Container;
use crate::error::Result;
use crate::runtime::{Observed, Runtime, Sink};

/// Options for [`Container::logs`].
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Keep the stream open and deliver new output as it comes.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
}

pub type LogStream = BoxStream<'static, Result<bytes::Bytes>>;

impl Container {
    /// The container's output (stdout and stderr merged) as the engine keeps it.
    pub async fn logs(&self, opts: LogOptions) -> Result<LogStream> {
        let docker = self.docker().await?;
        // Up front, because a stream would report a missing container only
        // once it is polled.
        self.inspect_existing(&docker).await?;
        let tail = opts
            .tail
            .map_or_else(|| "all".to_owned(), |n| n.to_string());
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(opts.follow)
            .tail(&tail)
            .build();
        let stream = docker.logs(&self.name, Some(options)).map(|item| {
            item.map(bollard::container::LogOutput::into_bytes)
                .map_err(|e| docker_error(e, None))
        });
        Ok(stream.boxed())
    }

    /// The output so far, optionally only the last `tail` lines, as text.
    pub async fn logs_text(&self, tail: Option<usize>) -> Result<String> {
        let mut stream = self
            .logs(LogOptions {
                follow: false,
                tail,
            })
            .await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Copies output into `sink` until the container stops for good. The
    /// engine's stream ends whenever the container stops; while it is still
    /// meant to run (its restart policy brought it back) the stream is
    /// reopened, skipping the bytes already copied, since the engine
    /// replays from the container's creation.
    pub(super) async fn follow(&self, sink: Sink, resume: bool) -> Result<()> {
        if resume {
            // The engine can only replay from the start: so does the log.
            sink.restart();
        }
        let mut copied: u64 = 0;
        loop {
            let opened = self
                .logs(LogOptions {
                    follow: true,
                    tail: None,
                })
                .await;
            match opened {
                Ok(mut stream) => {
                    let mut skip = copied;
                    while let Some(chunk) = stream.next().await {
                        let bytes = match chunk {
                            Ok(b) => b,
                            Err(e) => {
                                tracing::debug!(container = %self.name, "output stream ended: {e}");
                                break;
                            }
                        };
                        let seen = skip.min(bytes.len() as u64);
                        skip -= seen;
                        let fresh = &bytes[seen as usize..];
                        if !fresh.is_empty() {
                            copied += fresh.len() as u64;
                            sink.output(fresh);
                        }
                    }
                }
                Err(e) => tracing::debug!(container = %self.name, "cannot follow output: {e}"),
            }
            match self.observe().await {
                Ok(
                    Observed::Running
                    | Observed::Paused
                    | Observed::Restarting
                    | Observed::Transitional(_),
                ) => tokio::time::sleep(Duration::from_millis(500)).await,
                _ => return Ok(()),
            }
        }
    }
}
