//! One-shot exec inside a container, with a timeout that really kills.

use std::time::Duration;

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::Docker;
use futures_util::StreamExt;

use super::connection::{docker_error, status_of};
use super::Container;
use crate::error::{Error, Result};
use crate::model::{ExecOutput, ExecRequest};
use crate::runtime::process;

type ExecStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = std::result::Result<bollard::container::LogOutput, bollard::errors::Error>,
            > + Send,
    >,
>;

impl Container {
    pub(super) async fn exec_once(&self, req: &ExecRequest) -> Result<ExecOutput> {
        req.validate()?;
        let docker = self.docker().await?;
        let config = ExecConfig {
            attach_stdin: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            cmd: Some(req.cmd.clone()),
            env: (!req.env.is_empty())
                .then(|| req.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: req.working_dir.clone(),
            user: req.user.clone(),
            ..Default::default()
        };
        let created = match docker.create_exec(&self.name, config).await {
            Ok(c) => c,
            Err(e) => {
                return Err(match status_of(&e) {
                    Some(404) => self.missing(),
                    Some(409) => Error::Runtime(format!(
                        "cannot exec in container {}: {}",
                        self.name,
                        if e.to_string().contains("paused") {
                            "it is paused"
                        } else {
                            "it is not running"
                        }
                    )),
                    _ => docker_error(e, None),
                })
            }
        };
        let mut out = ExecOutput::default();
        // Attached before the clock starts: the command's time is its own,
        // and a command cut off while the engine was still starting it
        // could start afterwards, beyond the reach of the kill below.
        let output = self.attach(&docker, &created.id).await?;
        let ran = tokio::time::timeout(
            req.timeout,
            self.collect(&docker, &created.id, output, &mut out),
        );
        match ran.await {
            Ok(result) => result.map(|()| out),
            Err(_) => {
                // What it printed before the deadline is kept.
                out.timed_out = true;
                if let Err(why) = self.kill_exec(&docker, &created.id).await {
                    return Err(Error::Timeout(format!(
                        "{:?} did not finish within {:?}; it could not be killed: {why}",
                        req.cmd.join(" "),
                        req.timeout
                    )));
                }
                Ok(out)
            }
        }
    }

    async fn attach(&self, docker: &Docker, exec_id: &str) -> Result<ExecStream> {
        let started = docker
            .start_exec(
                exec_id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| docker_error(e, None))?;
        match started {
            StartExecResults::Attached { output, .. } => Ok(output),
            StartExecResults::Detached => Err(Error::Runtime(
                "docker started the exec detached although output was requested".into(),
            )),
        }
    }

    /// Reads an attached exec's output to its end, then its exit code.
    async fn collect(
        &self,
        docker: &Docker,
        exec_id: &str,
        mut output: ExecStream,
        out: &mut ExecOutput,
    ) -> Result<()> {
        while let Some(item) = output.next().await {
            match item.map_err(|e| docker_error(e, None))? {
                bollard::container::LogOutput::StdOut { message }
                | bollard::container::LogOutput::Console { message } => out.push(false, &message),
                bollard::container::LogOutput::StdErr { message } => out.push(true, &message),
                bollard::container::LogOutput::StdIn { .. } => {}
            }
        }
        // The output ends when the process closes it, which may be a moment
        // before Docker has recorded the exit code.
        let mut delay = Duration::from_millis(5);
        loop {
            let inspected = docker
                .inspect_exec(exec_id)
                .await
                .map_err(|e| docker_error(e, None))?;
            if inspected.running != Some(true) {
                out.exit_code = inspected.exit_code.ok_or_else(|| {
                    Error::Runtime("docker reported no exit code for the exec".into())
                })?;
                return Ok(());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Kills a timed-out exec process and what it started. Docker has no API
    /// for that. As root, the host's kill(2) does it, which is only right
    /// when the engine runs on this host: the target must share the
    /// container's pid namespace and not ours. A daemon that may not signal
    /// the container's processes (not root) asks the container itself, with
    /// a second exec of `kill` as the container's root user; an image
    /// without `kill` makes that fail, and the error says so.
    pub(super) async fn kill_exec(&self, docker: &Docker, exec_id: &str) -> Result<(), String> {
        // The engine may report the process running a moment before its pid.
        let mut pid = None;
        for _ in 0..250 {
            let exec = docker
                .inspect_exec(exec_id)
                .await
                .map_err(|e| docker_error(e, None).to_string())?;
            if exec.running != Some(true) && exec.exit_code.is_some() {
                return Ok(());
            }
            pid = exec
                .pid
                .and_then(|p| i32::try_from(p).ok())
                .filter(|p| *p > 0);
            if pid.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = pid.ok_or("docker did not report the exec's pid")?;
        let init = self
            .inspect_with(docker)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|c| c.state?.pid)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or("the container has no running init process")?;
        let target = process::pid_namespace(&pid.to_string());
        let foreign = target.is_none() && process::pid_namespace("self").is_some();
        if !foreign
            && (target != process::pid_namespace(&init.to_string())
                || target == process::pid_namespace("self"))
        {
            return Err(format!(
                "pid {pid} is not a process of container {} on this host \
                 (is the engine remote?)",
                self.name
            ));
        }
        if foreign || !process::may_signal(pid) {
            // Not ours to signal (an unprivileged daemon): ask the container.
            self.kill_from_inside(docker, pid).await?
        } else {
            process::kill_tree(pid)?;
        }
        // Wait for Docker to see the exit, so the process is gone (not just
        // signalled) once the caller hears about the timeout.
        for _ in 0..200 {
            match docker.inspect_exec(exec_id).await {
                Ok(e) if e.running == Some(true) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => return Ok(()),
            }
        }
        Err(format!("pid {pid} was sent SIGKILL but still runs"))
    }

    /// SIGKILLs host `pid` and its descendants through `kill` run inside the
    /// container, naming them by their pids in the container's namespace.
    async fn kill_from_inside(&self, docker: &Docker, pid: i32) -> Result<(), String> {
        let mut victims = vec![pid];
        victims.extend(process::descendants(pid));
        let inner: Vec<String> = victims
            .iter()
            .filter_map(|p| process::namespaced_pid(*p))
            .map(|p| p.to_string())
            .collect();
        if inner.is_empty() {
            return Err(format!("cannot tell pid {pid}'s pid inside the container"));
        }
        let mut cmd = vec!["kill".to_owned(), "-KILL".to_owned()];
        cmd.extend(inner);
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(cmd),
            user: Some("0".into()),
            ..Default::default()
        };
        let created = docker
            .create_exec(&self.name, config)
            .await
            .map_err(|e| docker_error(e, None).to_string())?;
        let mut out = ExecOutput::default();
        let output = self
            .attach(docker, &created.id)
            .await
            .map_err(|e| e.to_string())?;
        self.collect(docker, &created.id, output, &mut out)
            .await
            .map_err(|e| e.to_string())?;
        if out.exit_code != 0 {
            return Err(format!(
                "`kill` inside the container failed (exit {}): {}",
                out.exit_code,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }
}
