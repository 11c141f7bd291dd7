//! `hyperfleet ps`, `create`, `start`, `stop`, `kill`, `restart`, `rm`,
//! `logs`, `inspect`, `wait`: Docker's verbs, each a few reads and writes
//! of the machine's files.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{write_whole, Failure, Mount};

fn read(mount: &Mount, name: &str, file: &str) -> Result<String, Failure> {
    std::fs::read_to_string(mount.file(name, file)).map_err(|e| mount.failure(name, "read", &e))
}

/// The machines' names, in the order `ls` gives them.
fn names(mount: &Mount) -> Result<Vec<String>, Failure> {
    mount.check_mounted()?;
    let mut names: Vec<String> = std::fs::read_dir(mount.path().join("machines"))
        .map_err(|e| Failure(format!("listing machines: {e}")))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Shown in `ps` for what a machine's files would not say.
const UNKNOWN: &str = "?";

/// One row of `ps`: what the machine's files say. A file that cannot be
/// read (`config` is its owner's alone) leaves [`UNKNOWN`] in its columns
/// and is said on stderr: the machine is never left out unsaid. `None`
/// only for a machine removed since it was listed.
fn row(mount: &Mount, name: &str) -> Option<Value> {
    let unreadable = |file: &str, e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound && !mount.machine(name).exists() {
            return None;
        }
        eprintln!("hyperfleet: ps: cannot read {name}/{file}: {e}");
        Some(UNKNOWN.to_owned())
    };
    let file = |file: &str| match std::fs::read_to_string(mount.file(name, file)) {
        Ok(text) => Some(text),
        Err(e) => unreadable(file, e),
    };
    let status = file("status")?.trim().to_owned();
    let config = file("config")?;
    let config: Value = match serde_json::from_str(&config) {
        Ok(v) => v,
        Err(e) if config != UNKNOWN => {
            eprintln!("hyperfleet: ps: {name}/config is not JSON: {e}");
            Value::Null
        }
        Err(_) => Value::Null,
    };
    let id = file("id")?.trim().to_owned();
    // Live facts only for what runs: `info` asks the runtime.
    let info: Value = if matches!(status.as_str(), "running" | "paused") {
        read(mount, name, "info")
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let (runtime, what) = if config.is_null() {
        (UNKNOWN.to_owned(), UNKNOWN.to_owned())
    } else {
        let runtime = config["runtime_type"].as_str().unwrap_or("").to_owned();
        let what = config["image"]
            .as_str()
            .or_else(|| config["kernel_image_path"].as_str())
            .unwrap_or("")
            .to_owned();
        (runtime, what)
    };
    let uptime = info["started_at_ms"].as_i64().map(|ms| {
        let now = crate::model::now_ms();
        human((now - ms).max(0) as u64 / 1000)
    });
    let rt = &info["runtime_info"];
    let mut addresses: Vec<String> = rt["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    addresses.extend(
        rt["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned)),
    );
    let error = read(mount, name, "error")
        .unwrap_or_default()
        .trim()
        .to_owned();
    Some(serde_json::json!({
        "name": name,
        "id": id,
        "runtime": runtime,
        "status": status,
        "uptime": uptime,
        "image_or_kernel": what,
        "addresses": addresses,
        "error": error,
    }))
}

fn human(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `ps [-a] [--format table|json]`: running machines (all with -a).
pub fn ps(mount: &Mount, all: bool, json: bool) -> Result<(), Failure> {
    let rows: Vec<Value> = names(mount)?
        .iter()
        .filter_map(|n| row(mount, n))
        .filter(|r| {
            // A machine whose status is unknown may well be running.
            all || matches!(
                r["status"].as_str(),
                Some("running" | "paused" | "starting" | "stopping" | UNKNOWN)
            )
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", Value::Array(rows));
        return Ok(());
    }
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
            // A start that failed shows, though the status did not change.
            let status = match s("status").as_str() {
                st @ ("pending" | "stopped") if !s("error").is_empty() => format!("{st} (error)"),
                st => st.to_owned(),
            };
            let addresses = r["addresses"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            [
                s("name"),
                s("runtime"),
                status,
                r["uptime"].as_str().unwrap_or("-").to_owned(),
                s("image_or_kernel"),
                addresses,
            ]
        })
        .collect();
    let header = [
        "NAME",
        "RUNTIME",
        "STATUS",
        "UPTIME",
        "IMAGE/KERNEL",
        "ADDRESSES",
    ];
    let mut widths = header.map(str::len);
    for r in &table {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        l.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(&header.map(str::to_owned)));
    for r in &table {
        let _ = writeln!(out, "{}", line(r));
    }
    Ok(())
}

/// `create NAME (-f FILE | --image IMAGE) [-- CMD...]`.
pub fn create(
    mount: &Mount,
    name: &str,
    config: Option<&str>,
    image: Option<&str>,
    runtime: Option<&str>,
    cmd: &[String],
) -> Result<(), Failure> {
    mount.check_mounted()?;
    let body = match (config, image) {
        (Some(path), _) => {
            let text = if path == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| Failure(format!("reading the config from stdin: {e}")))?;
                s
            } else {
                std::fs::read_to_string(path)
                    .map_err(|e| Failure(format!("reading {path}: {e}")))?
            };
            text
        }
        (None, image) => {
            let mut v = serde_json::json!({});
            if let Some(r) = runtime {
                v["runtime_type"] = r.into();
            }
            if let Some(i) = image {
                v["image"] = i.into();
            }
            if !cmd.is_empty() {
                v["cmd"] = cmd.into();
            }
            v.to_string()
        }
    };
    std::fs::create_dir(mount.machine(name)).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            Failure(format!("create {name}: a machine by that name exists"))
        }
        _ => Failure(format!("create {name}: {e}")),
    })?;
    let mut doc = body.trim_end().to_owned();
    doc.push('\n');
    if let Err(e) = write_whole(&mount.file(name, "config"), doc.as_bytes()) {
        let f = mount.failure(name, "configure", &e);
        // Nothing half-made: the machine goes with its refused config.
        let _ = std::fs::remove_dir(mount.machine(name));
        return Err(f);
    }
    println!("{name}");
    Ok(())
}

/// `start`, `stop`, `kill`, `restart`: the same verb on each machine.
pub fn lifecycle(mount: &Mount, verb: &str, names: &[String]) -> Result<(), Failure> {
    let mut failed = None;
    for name in names {
        match mount.ctl(name, verb) {
            Ok(()) => println!("{name}"),
            Err(f) => {
                eprintln!("hyperfleet: {f}");
                failed = Some(f);
            }
        }
    }
    match failed {
        Some(_) => Err(Failure(String::new())),
        None => Ok(()),
    }
}

/// `rm [-f] NAME...`: -f stops a running machine first (with a kill).
pub fn rm(mount: &Mount, force: bool, names: &[String]) -> Result<(), Failure> {
    mount.check_mounted()?;
    let mut failed = false;
    for name in names {
        let res = (|| {
            if force {
                let status = read(mount, name, "status")?;
                if matches!(
                    status.trim(),
                    "running" | "paused" | "starting" | "stopping"
                ) {
                    mount.ctl(name, "kill")?;
                }
            }
            std::fs::remove_dir(mount.machine(name)).map_err(|e| mount.failure(name, "rm", &e))
        })();
        match res {
            Ok(()) => println!("{name}"),
            Err(f) => {
                eprintln!("hyperfleet: {f}");
                failed = true;
            }
        }
    }
    if failed {
        Err(Failure(String::new()))
    } else {
        Ok(())
    }
}

/// `logs [-f] [--tail N] NAME`.
pub fn logs(mount: &Mount, name: &str, follow: bool, tail: Option<usize>) -> Result<(), Failure> {
    mount.check_mounted()?;
    let path = mount.file(name, "logs");
    let mut f = std::fs::File::open(&path).map_err(|e| mount.failure(name, "logs of", &e))?;
    let mut text = Vec::new();
    f.read_to_end(&mut text)
        .map_err(|e| mount.failure(name, "logs of", &e))?;
    let start = match tail {
        None => 0,
        Some(0) => text.len(),
        Some(n) => {
            let body = text.strip_suffix(b"\n").unwrap_or(&text);
            body.iter()
                .enumerate()
                .rev()
                .filter(|(_, b)| **b == b'\n')
                .nth(n - 1)
                .map_or(0, |(i, _)| i + 1)
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&text[start..]);
    let _ = out.flush();
    if !follow {
        return Ok(());
    }
    let mut offset = text.len() as u64;
    let mut quiet_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        // The log starts afresh at a new run (or past its cap): from the top.
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0;
        }
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(_) => return Ok(()),
        };
        let _ = f.seek(SeekFrom::Start(offset));
        let mut more = Vec::new();
        let _ = f.read_to_end(&mut more);
        if !more.is_empty() {
            offset += more.len() as u64;
            quiet_since = Instant::now();
            let _ = out.write_all(&more);
            let _ = out.flush();
            continue;
        }
        // Following ends with the run, as `docker logs -f` does.
        let status = read(mount, name, "status").unwrap_or_default();
        if !matches!(
            status.trim(),
            "running" | "paused" | "starting" | "stopping"
        ) && quiet_since.elapsed() > Duration::from_secs(1)
        {
            return Ok(());
        }
    }
}

/// `inspect NAME...`: each machine's `info`, as one JSON array.
pub fn inspect(mount: &Mount, names: &[String]) -> Result<(), Failure> {
    mount.check_mounted()?;
    let mut all = Vec::new();
    for name in names {
        let text = read(mount, name, "info")?;
        all.push(
            serde_json::from_str::<Value>(&text)
                .map_err(|e| Failure(format!("inspect {name}: info is not JSON: {e}")))?,
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&Value::Array(all)).unwrap_or_default()
    );
    Ok(())
}

/// `wait NAME [STATUS] [--timeout SECS]`: until the machine has that status,
/// or, with none, until it is no longer running; prints its exit code then.
pub fn wait(
    mount: &Mount,
    name: &str,
    status: Option<&str>,
    timeout: Option<f64>,
) -> Result<i32, Failure> {
    mount.check_mounted()?;
    if let Some(st) = status {
        let line = match timeout {
            Some(t) => format!("wait {st} {t}"),
            None => format!("wait {st}"),
        };
        mount.ctl(name, &line)?;
        return Ok(0);
    }
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t));
    loop {
        let st = read(mount, name, "status")?;
        if !matches!(
            st.trim(),
            "running" | "paused" | "starting" | "stopping" | "pending"
        ) {
            let info: Value =
                serde_json::from_str(&read(mount, name, "info")?).unwrap_or(Value::Null);
            let code = info["exit_code"].as_i64();
            match code {
                Some(c) => println!("{c}"),
                None => println!("{}", st.trim()),
            }
            return Ok(code.map_or(1, |c| c.clamp(0, 255) as i32));
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Err(Failure(format!(
                "wait {name}: still {} after the timeout",
                st.trim()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
