//! What each route does: parse its body, build the typed core call, render
//! the result. Nothing here keeps state; lifecycle verbs are the same
//! [`Action`]s the filesystem's `ctl` submits.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::ACCEPT;
use hyper::{Request, StatusCode};
use serde_json::Value;

use super::machine::{render_one, ExecResult, HealthJson, RuntimeHealth};
use super::reply::{empty, full, json, json_bytes, read_body, with_type, Problem, Reply};
use super::routes::{Args, Op, Route};
use super::{events, logs, Api};
use crate::core::Machine;
use crate::error::Error;
use crate::model::action::{DEFAULT_SHUTDOWN_GRACE, DEFAULT_WAIT_TIMEOUT};
use crate::model::{Action, ExecCommand, MachineSpec, RuntimeKind, Status, Verb};
use crate::runtime::Health;

pub async fn run(
    api: &Arc<Api>,
    route: &'static Route,
    id: Option<String>,
    args: Args,
    req: Request<Incoming>,
) -> Reply {
    let core = &api.core;
    let machine =
        || -> Result<Arc<Machine>, Problem> { Ok(core.find(id.as_deref().unwrap_or_default())?) };
    match route.op {
        Op::Health => Ok(json(StatusCode::OK, &health(api))),
        Op::OpenApi => Ok(json_bytes(StatusCode::OK, api.openapi.to_vec())),
        Op::Swagger => Ok(with_type(
            StatusCode::OK,
            "text/html; charset=utf-8",
            full(api.swagger.clone()),
        )),
        Op::List => Ok(json_bytes(StatusCode::OK, list(api, &args))),
        Op::Create => {
            let body = read_body(req.into_body(), api.limits.body, api.limits.body_timeout).await?;
            let (name, spec) = create_body(&body)?;
            api.paths.check(&spec)?;
            let m = core.create(name.as_bytes(), spec).await?;
            Ok(json_bytes(StatusCode::CREATED, render_one(core, &m).await))
        }
        Op::Get => {
            let m = machine()?;
            Ok(json_bytes(StatusCode::OK, render_one(core, &m).await))
        }
        Op::Delete => {
            let m = machine()?;
            let core = core.clone();
            // On its own task: a client that hangs up between the stop and
            // the delete does not leave the machine stopped but not deleted.
            let done = tokio::spawn(async move {
                if matches!(
                    m.status(),
                    Status::Running | Status::Paused | Status::Stopping
                ) {
                    match core.act(&m, Action::Stop).await {
                        Ok(()) => {}
                        // Stopped meanwhile, or ended by itself: delete decides.
                        Err(e)
                            if matches!(
                                e.root(),
                                Error::AlreadyInState(_) | Error::InvalidState { .. }
                            ) => {}
                        Err(e) => return Err(e),
                    }
                }
                core.delete(&m).await
            })
            .await;
            match done {
                Ok(res) => res?,
                Err(e) => return Err(Error::Runtime(format!("delete aborted: {e}")).into()),
            }
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Op::GetConfig => {
            let m = machine()?;
            Ok(json(StatusCode::OK, &m.with_record(|r| r.spec.clone())))
        }
        Op::SetConfig => {
            let m = machine()?;
            let body = read_body(req.into_body(), api.limits.body, api.limits.body_timeout).await?;
            if api.paths.is_confined() {
                // An unparsable spec is left to set_config, which says why.
                if let Ok(spec) = MachineSpec::parse(&body) {
                    if let Err(e) = api.paths.check(&spec) {
                        return Err(core.report(&m, e).await.into());
                    }
                }
            }
            core.set_config(&m, &body).await?;
            Ok(json_bytes(StatusCode::OK, render_one(core, &m).await))
        }
        Op::Act(verb) => {
            let m = machine()?;
            let action = lifecycle(verb, &args)?;
            core.act(&m, action).await?;
            Ok(json_bytes(StatusCode::OK, render_one(core, &m).await))
        }
        Op::Wait => {
            let m = machine()?;
            let target = args
                .target("status")
                .ok_or_else(|| Problem::from(Error::InvalidCommand("status is required".into())))?;
            let timeout = args.seconds("timeout").unwrap_or(DEFAULT_WAIT_TIMEOUT);
            core.act(&m, Action::Wait { target, timeout }).await?;
            Ok(json_bytes(StatusCode::OK, render_one(core, &m).await))
        }
        Op::Exec => {
            let m = machine()?;
            let body = read_body(req.into_body(), api.limits.body, api.limits.body_timeout).await?;
            let cmd = match exec_body(&body) {
                Ok(c) => c,
                Err(e) => return Err(core.report(&m, e).await.into()),
            };
            let out = core.exec(&m, cmd.request).await?;
            Ok(json(
                StatusCode::OK,
                &ExecResult {
                    exit_code: out.exit_code,
                    stdout: String::from_utf8_lossy(&out.stdout),
                    stderr: String::from_utf8_lossy(&out.stderr),
                    stdout_truncated: out.stdout_truncated,
                    stderr_truncated: out.stderr_truncated,
                },
            ))
        }
        Op::Logs => {
            let m = machine()?;
            logs::reply(m, args.lines("tail"), args.flag("follow")).await
        }
        Op::Events => {
            // Before the machine is looked up: its deletion cannot fall
            // between the two, so a stream of one machine always ends.
            let sub = core.subscribe();
            let key = id.as_deref().or(args.text("machine"));
            let filter = events::Filter {
                machine: key.map(|k| core.find(k)).transpose()?,
                types: args.event_types("type").map(<[_]>::to_vec),
            };
            let framing = events::Framing::of(req.headers().get(ACCEPT));
            Ok(events::reply(sub, filter, framing))
        }
    }
}

fn health(api: &Api) -> HealthJson {
    let runtimes = RuntimeKind::ALL
        .into_iter()
        .map(|k| {
            let h = match api.core.health(k) {
                Health::Available { detail } => RuntimeHealth {
                    available: true,
                    detail: Some(detail),
                    reason: None,
                },
                Health::Unavailable { reason } => RuntimeHealth {
                    available: false,
                    detail: None,
                    reason: Some(reason),
                },
            };
            (k.as_str(), h)
        })
        .collect::<BTreeMap<_, _>>();
    HealthJson {
        status: "ok",
        runtimes,
    }
}

/// Every machine (filtered), rendered from the registry: no runtime is
/// asked anything, so container_id and pid are null.
pub fn list(api: &Api, args: &Args) -> Vec<u8> {
    let runtime = args.runtime("runtime_type");
    let status = args.status("status");
    let entries = api.core.list();
    let total = entries.len();
    let machines: Vec<Arc<Machine>> = entries
        .into_iter()
        .filter(|e| status.is_none_or(|s| s == e.status))
        .filter(|e| runtime.is_none_or(|r| r == e.runtime))
        .filter_map(|e| api.core.get_by_seq(e.seq))
        .collect();
    let mut out = Vec::with_capacity(64 + machines.len() * 768);
    out.push(b'[');
    // Filtered again on the record itself, which may have moved on since the listing.
    let keep = |rec: &crate::model::MachineRecord| {
        status.is_none_or(|s| s == rec.status)
            && runtime.is_none_or(|r| r == rec.spec.runtime_type())
    };
    api.list_cache
        .render(machines.iter(), keep, total, &mut out);
    out.push(b']');
    out
}

/// The typed action a lifecycle route names.
fn lifecycle(verb: Verb, args: &Args) -> Result<Action, Problem> {
    Ok(match verb {
        Verb::Start => Action::Start,
        Verb::Stop => Action::Stop,
        Verb::Restart => Action::Restart,
        Verb::Pause => Action::Pause,
        Verb::Resume => Action::Resume,
        Verb::Kill => Action::Kill,
        Verb::Shutdown => Action::Shutdown {
            grace: args.seconds("timeout").unwrap_or(DEFAULT_SHUTDOWN_GRACE),
        },
        other => return Err(Error::NoRoute(format!("no REST route for {}", other.name())).into()),
    })
}

/// The create body is the config plus the machine's name.
pub fn create_body(bytes: &[u8]) -> Result<(String, MachineSpec), Problem> {
    let mut v: Value =
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidConfig(e.to_string()))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| Error::InvalidConfig("the body must be a JSON object".into()))?;
    let name = match obj.remove("name") {
        Some(Value::String(n)) => n,
        Some(other) => {
            return Err(Error::InvalidConfig(format!(
                "name: invalid type: {}, expected a string",
                kind_of(&other)
            ))
            .into())
        }
        None => {
            return Err(Error::InvalidName {
                name: String::new(),
                reason: "\"name\" (a string) is required",
            }
            .into())
        }
    };
    let spec = MachineSpec::from_value(v)?;
    Ok((name, spec))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// REST exec bodies are JSON objects `{cmd, timeout, env, working_dir, user}`.
fn exec_body(bytes: &Bytes) -> Result<ExecCommand, Error> {
    let is_object = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if !is_object {
        return Err(Error::InvalidCommand(
            "the exec body must be a JSON object such as {\"cmd\": [\"ls\", \"-la\"], \"timeout\": 30}"
                .into(),
        ));
    }
    ExecCommand::parse(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_needs_a_name_and_a_valid_spec() {
        let (name, spec) = create_body(br#"{"name":"web","image":"x","vcpu_count":2}"#).unwrap();
        assert_eq!(name, "web");
        assert_eq!(spec.vcpu_count, 2);
        assert!(create_body(br#"{"name":"w","image":"x","kernel_image_path":""}"#).is_ok());
        for (bad, code) in [
            (&br#"{"image":"x"}"#[..], "invalid_name"),
            (br#"{"name":7}"#, "validation_error"),
            (br#"{"name":"w","bogus":1}"#, "validation_error"),
            (br#"[1]"#, "validation_error"),
            (br#"{"name":"w""#, "validation_error"),
        ] {
            let p = create_body(bad).unwrap_err();
            assert_eq!(p.code, code, "{}", String::from_utf8_lossy(bad));
            assert_eq!(p.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn exec_bodies_must_be_json_objects() {
        let c = exec_body(&Bytes::from_static(
            br#" {"cmd":["ls","-la"],"timeout":30}"#,
        ))
        .unwrap();
        assert_eq!(c.request.cmd, vec!["ls", "-la"]);
        assert_eq!(c.request.timeout.as_secs(), 30);
        assert!(exec_body(&Bytes::from_static(b"ls -la")).is_err());
        assert!(exec_body(&Bytes::from_static(br#"{"cmd":"ls"}"#)).is_err());
        assert!(exec_body(&Bytes::from_static(br#"{"cmd":["ls"],"timeout":"30"}"#)).is_err());
    }
}
