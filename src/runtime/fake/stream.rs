//! The fake runtime's streaming commands, as small scripts over a
//! session's channels. They answer a signal or the kill whatever their
//! stdin and stdout are doing, as a real command gets a signal whether or
//! not it reads its input.

use tokio::sync::{mpsc, oneshot};

use crate::model::ExecOutput;
use crate::runtime::{ExecControl, ExecEnds, StreamOutput};

/// What a `yes` sends at a time.
const YES_CHUNK: usize = 4096;

pub(super) enum FakeStream {
    /// Copies stdin to stdout; exits 0 when stdin ends.
    Cat,
    /// Never reads its stdin; only a signal or the kill ends it.
    Hold,
    /// `y` lines without end.
    Yes,
    /// Ends without an exit.
    Vanish,
    /// A one-shot result, streamed.
    Done(ExecOutput),
}

impl FakeStream {
    pub(super) async fn run(self, ends: ExecEnds) {
        let ExecEnds {
            mut stdin,
            mut control,
            mut kill,
            output,
        } = ends;
        let code = match self {
            FakeStream::Vanish => return,
            FakeStream::Done(result) => {
                for msg in [
                    StreamOutput::Stdout(result.stdout),
                    StreamOutput::Stderr(result.stderr),
                    StreamOutput::Exit {
                        code: result.exit_code,
                        timed_out: result.timed_out,
                    },
                ] {
                    if output.send(msg).await.is_err() {
                        return;
                    }
                }
                return;
            }
            FakeStream::Hold => Some(interrupt(&mut control, &mut kill).await),
            FakeStream::Cat => {
                let mut pending: Option<Vec<u8>> = None;
                loop {
                    tokio::select! {
                        biased;
                        code = interrupt(&mut control, &mut kill) => break Some(code),
                        permit = output.reserve(), if pending.is_some() => match permit {
                            Ok(p) => p.send(StreamOutput::Stdout(pending.take().unwrap_or_default())),
                            Err(_) => break None,
                        },
                        b = stdin.recv(), if pending.is_none() => match b {
                            Some(b) => pending = Some(b),
                            None => break Some(0),
                        },
                    }
                }
            }
            FakeStream::Yes => loop {
                tokio::select! {
                    biased;
                    code = interrupt(&mut control, &mut kill) => break Some(code),
                    permit = output.reserve() => match permit {
                        Ok(p) => p.send(StreamOutput::Stdout(b"y\n".repeat(YES_CHUNK / 2))),
                        Err(_) => break None,
                    },
                }
            },
        };
        if let Some(code) = code {
            let _ = output
                .send(StreamOutput::Exit {
                    code,
                    timed_out: false,
                })
                .await;
        }
    }
}

/// The exit code of the next signal (128 + it) or of the kill (137).
/// Cancel-safe, so scripts race it against their work.
async fn interrupt(
    control: &mut mpsc::Receiver<ExecControl>,
    kill: &mut oneshot::Receiver<()>,
) -> i64 {
    let killed = 128 + i64::from(libc::SIGKILL);
    loop {
        tokio::select! {
            biased;
            _ = &mut *kill => return killed,
            c = control.recv() => match c {
                Some(ExecControl::Signal(sig)) => return 128 + i64::from(sig),
                Some(ExecControl::Resize(_)) => {}
                // The session let go of its controls: the kill comes next.
                None => {
                    let _ = (&mut *kill).await;
                    return killed;
                }
            },
        }
    }
}
