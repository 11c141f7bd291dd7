//! Attached exec inside a container (`hyperfleet exec -it`): stdin, stdout
//! and stderr streamed through the engine's hijacked connection, a pty on
//! request, window resizes, signals, close-stdin.

use std::sync::Arc;
use std::time::Duration;

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::ResizeExecOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::connection::{docker_error, status_of};
use super::Container;
use crate::error::{Error, Result};
use crate::model::{StreamRequest, WindowSize};
use crate::runtime::{exec_channels, process, ExecControl, ExecEnds, ExecStreams, StreamOutput};

impl Container {
    pub(super) async fn exec_attached(&self, req: &StreamRequest) -> Result<ExecStreams> {
        req.validate()?;
        let docker = self.docker().await?;
        let config = ExecConfig {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(req.tty.is_some()),
            cmd: Some(req.cmd.clone()),
            env: (!req.env.is_empty())
                .then(|| req.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: req.working_dir.clone(),
            user: req.user.clone(),
            ..Default::default()
        };
        let created =
            docker
                .create_exec(&self.name, config)
                .await
                .map_err(|e| match status_of(&e) {
                    Some(404) => self.missing(),
                    Some(409) => Error::Runtime(format!(
                        "cannot exec in container {}: it is not running",
                        self.name
                    )),
                    _ => docker_error(e, None),
                })?;
        let id = created.id;
        let started = docker
            .start_exec(
                &id,
                Some(StartExecOptions {
                    detach: false,
                    tty: req.tty.is_some(),
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| docker_error(e, None))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(Error::Runtime(
                "docker started the exec detached although it was attached".into(),
            ));
        };
        if let Some(size) = req.tty {
            resize(&docker, &id, size).await;
        }
        let (streams, ends) = exec_channels();
        let ExecEnds {
            stdin,
            control,
            kill,
            output: out_tx,
        } = ends;

        // Kills the command and all it started (a timeout, a caller gone).
        let killer = Arc::new(ExecKiller {
            container: Container::with_connection(
                self.conn.clone(),
                self.machine.clone(),
                self.spec.clone(),
                crate::runtime::null_sink(),
            )?,
            docker: docker.clone(),
            id: id.clone(),
        });
        // Stdin and the controls on tasks of their own: a command that does
        // not read its stdin blocks the one, never the other.
        let stdin_task = tokio::spawn(feed_stdin(stdin, input));
        let control_task = tokio::spawn(controls(
            control,
            kill,
            ExecHandle {
                docker: docker.clone(),
                container: self.name.clone(),
                id: id.clone(),
                killer: killer.clone(),
            },
        ));

        // Output: the command's streams, then how it ended.
        let timeout = req.timeout;
        let me_name = self.name.clone();
        let conn = self.conn.clone();
        let kill = killer;
        tokio::spawn(async move {
            let mut output = output;
            let pump = async {
                while let Some(item) = output.next().await {
                    let msg = match item {
                        Ok(bollard::container::LogOutput::StdOut { message })
                        | Ok(bollard::container::LogOutput::Console { message }) => {
                            StreamOutput::Stdout(message.to_vec())
                        }
                        Ok(bollard::container::LogOutput::StdErr { message }) => {
                            StreamOutput::Stderr(message.to_vec())
                        }
                        Ok(bollard::container::LogOutput::StdIn { .. }) => continue,
                        Err(e) => {
                            tracing::debug!(container = %me_name, "exec stream ended: {e}");
                            break;
                        }
                    };
                    // A reader that went away ends the session.
                    if out_tx.send(msg).await.is_err() {
                        return false;
                    }
                }
                true
            };
            let finished = match timeout {
                Some(t) => tokio::time::timeout(t, pump).await,
                None => Ok(pump.await),
            };
            stdin_task.abort();
            control_task.abort();
            let docker = match conn.client().await {
                Ok(d) => d,
                Err(_) => return,
            };
            let (code, timed_out) = match finished {
                Ok(true) => (exit_code(&docker, &id).await, false),
                // Timed out, or nobody listens any more: the command goes,
                // with everything it started.
                Ok(false) | Err(_) => {
                    kill.kill().await;
                    (128 + i64::from(libc::SIGKILL), finished.is_err())
                }
            };
            let _ = out_tx.send(StreamOutput::Exit { code, timed_out }).await;
        });
        Ok(streams)
    }
}

/// Copies stdin to the command's until the session closes it (or the
/// command stops taking it, as a pipe would).
async fn feed_stdin(
    mut stdin: mpsc::Receiver<Vec<u8>>,
    mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
) {
    while let Some(bytes) = stdin.recv().await {
        if input.write_all(&bytes).await.is_err() {
            // Dropping the receiver makes later writes fail (EPIPE).
            return;
        }
    }
    let _ = input.shutdown().await;
}

/// An exec as the engine addresses it.
struct ExecHandle {
    docker: Docker,
    container: String,
    id: String,
    killer: Arc<ExecKiller>,
}

/// Signals, resizes and the kill, as they come.
async fn controls(
    mut control: mpsc::Receiver<ExecControl>,
    mut kill: oneshot::Receiver<()>,
    exec: ExecHandle,
) {
    loop {
        let c = tokio::select! {
            biased;
            _ = &mut kill => return exec.killer.kill().await,
            c = control.recv() => c,
        };
        match c {
            Some(ExecControl::Signal(libc::SIGKILL)) => exec.killer.kill().await,
            Some(ExecControl::Signal(sig)) => {
                if let Err(e) = signal_exec(&exec.docker, &exec.container, &exec.id, sig).await {
                    tracing::debug!(container = %exec.container, "cannot signal exec: {e}");
                }
            }
            Some(ExecControl::Resize(size)) => resize(&exec.docker, &exec.id, size).await,
            // The session let go of its controls; the kill comes with that.
            None => {
                let _ = kill.await;
                return exec.killer.kill().await;
            }
        }
    }
}

/// Kills an exec's command and everything it started.
struct ExecKiller {
    container: Container,
    docker: Docker,
    id: String,
}

impl ExecKiller {
    async fn kill(&self) {
        if let Err(e) = self.container.kill_exec(&self.docker, &self.id).await {
            tracing::warn!(container = %self.container.name, "cannot kill exec: {e}");
        }
    }
}

async fn resize(docker: &Docker, id: &str, size: WindowSize) {
    let options = ResizeExecOptionsBuilder::default()
        .h(i32::from(size.rows))
        .w(i32::from(size.cols))
        .build();
    if let Err(e) = docker.resize_exec(id, options).await {
        tracing::debug!("cannot resize exec {id}: {e}");
    }
}

/// The exit code the engine recorded, once it has (the output ends a
/// moment before the engine notes the exit).
async fn exit_code(docker: &Docker, id: &str) -> i64 {
    let mut delay = Duration::from_millis(5);
    for _ in 0..200 {
        match docker.inspect_exec(id).await {
            Ok(e) if e.running != Some(true) => return e.exit_code.unwrap_or(-1),
            Ok(_) => {}
            Err(_) => return -1,
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
    -1
}

/// How long a signal waits for its command's process to show.
const SIGNAL_WAIT: Duration = Duration::from_secs(5);

/// Sends `sig` to an exec's process. The engine has no API for it: as root
/// the host's kill(2) reaches it; otherwise `kill` runs inside the container.
async fn signal_exec(
    docker: &Docker,
    container: &str,
    id: &str,
    sig: i32,
) -> std::result::Result<(), String> {
    // Just after the attach, the engine may not show the process yet: a
    // signal sent then (`signal TERM` right after the command) must wait
    // for it rather than be dropped. One that has ended needs none.
    let deadline = tokio::time::Instant::now() + SIGNAL_WAIT;
    let pid = loop {
        let exec = docker
            .inspect_exec(id)
            .await
            .map_err(|e| docker_error(e, None).to_string())?;
        let pid = exec
            .pid
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0);
        match (exec.running, exec.exit_code, pid) {
            (Some(true), _, Some(pid)) => break pid,
            (_, Some(_), _) => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => {
                return Err("the command has not started in docker yet".into())
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    if process::may_signal(pid) {
        // SAFETY: kill(2) on one positive pid; no memory is touched.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        return Ok(());
    }
    let inner =
        process::namespaced_pid(pid).ok_or("cannot tell the exec's pid in the container")?;
    let config = ExecConfig {
        cmd: Some(vec!["kill".into(), format!("-{sig}"), inner.to_string()]),
        user: Some("0".into()),
        ..Default::default()
    };
    let created = docker
        .create_exec(container, config)
        .await
        .map_err(|e| docker_error(e, None).to_string())?;
    docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: true,
                tty: false,
                output_capacity: None,
            }),
        )
        .await
        .map_err(|e| docker_error(e, None).to_string())?;
    Ok(())
}
