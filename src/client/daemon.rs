//! `hyperfleet stop-daemon`: asks the daemon of a state directory to stop
//! (SIGTERM, as systemd would) and waits until it has unmounted and gone.

use std::path::Path;
use std::time::{Duration, Instant};

use super::Failure;

pub fn stop(state_dir: &Path, wait: Duration) -> Result<(), Failure> {
    let pid_file = state_dir.join("hyperfleet.pid");
    let text = std::fs::read_to_string(&pid_file).map_err(|e| {
        Failure(format!(
            "no daemon is serving {} ({}: {e})",
            state_dir.display(),
            pid_file.display()
        ))
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| Failure(format!("{} does not hold a pid", pid_file.display())))?;
    // SAFETY: kill(2) on one positive pid.
    if pid <= 0 || unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Failure(format!(
            "cannot signal the daemon (pid {pid}): {e}"
        )));
    }
    let deadline = Instant::now() + wait;
    // Gone once its pid file is (it removes it after unmounting) or it is.
    while pid_file.exists() && Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            return Err(Failure(format!(
                "the daemon (pid {pid}) did not stop within {}s",
                wait.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("hyperfleet daemon (pid {pid}) stopped");
    Ok(())
}
