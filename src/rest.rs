//! The REST front end, compatible with the original Hyperfleet API. Like the
//! filesystem it holds no state: each route parses its request and calls the
//! core; each error becomes the HTTP status its variant maps to, with a JSON
//! body `{"error": code, "message": text}`.
//!
//! ```text
//! GET    /health
//! GET    /machines[?runtime_type=docker&status=running]
//! POST   /machines                      {"name": ..., <config fields>}
//! GET    /machines/{id|name}
//! DELETE /machines/{id|name}
//! POST   /machines/{id|name}/{start|stop|restart|pause|resume|kill}
//! POST   /machines/{id|name}/shutdown[?timeout=secs]
//! POST   /machines/{id|name}/wait?status=running[&timeout=secs]
//! POST   /machines/{id|name}/exec      {"cmd": [...], "timeout": secs, "env": {...}}
//! GET    /machines/{id|name}/logs[?tail=N]
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::core::{describe, Core};
use crate::error::{Error, Result};
use crate::model::action::{seconds, wait_target, DEFAULT_SHUTDOWN_GRACE, DEFAULT_WAIT_TIMEOUT};
use crate::model::{Action, ExecCommand, MachineSpec, RuntimeKind, MAX_WRITE};
use crate::runtime::Health;

type Body = Full<Bytes>;

/// Serves REST on `listener` until the task is dropped.
pub async fn serve(core: Arc<Core>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("rest: accept: {e}");
                continue;
            }
        };
        let core = core.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let core = core.clone();
                async move { Ok::<_, Infallible>(handle(&core, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!("rest: connection from {peer}: {e}");
            }
        });
    }
}

async fn handle(core: &Arc<Core>, req: Request<Incoming>) -> Response<Body> {
    match route(core, req).await {
        Ok(resp) => resp,
        Err(e) => json_response(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &json!({ "error": e.code(), "message": e.report().to_string() }),
        ),
    }
}

async fn route(core: &Arc<Core>, req: Request<Incoming>) -> Result<Response<Body>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    match (&method, segments.as_slice()) {
        (&Method::GET, ["health"]) => {
            let runtimes: serde_json::Map<String, Value> = RuntimeKind::ALL
                .into_iter()
                .map(|k| {
                    let h = match core.health(k) {
                        Health::Available { detail } => {
                            json!({"available": true, "detail": detail})
                        }
                        Health::Unavailable { reason } => {
                            json!({"available": false, "reason": reason})
                        }
                    };
                    (k.to_string(), h)
                })
                .collect();
            ok(json!({ "status": "ok", "runtimes": runtimes }))
        }
        (&Method::GET, ["machines"]) => {
            let runtime = query.get("runtime_type");
            let status = query.get("status");
            let list: Vec<Value> = core
                .list()
                .into_iter()
                .filter(|e| runtime.is_none_or(|r| e.runtime.as_str() == r))
                .filter(|e| status.is_none_or(|s| e.status.as_str() == s))
                .filter_map(|e| core.get_by_seq(e.seq))
                .map(|m| describe(&m.snapshot()))
                .collect();
            ok(Value::Array(list))
        }
        (&Method::POST, ["machines"]) => {
            let (name, spec) = create_body(&body(req).await?)?;
            let m = core.create(name.as_bytes(), spec).await?;
            Ok(json_response(StatusCode::CREATED, &describe(&m.snapshot())))
        }
        (&Method::GET, ["machines", key]) => ok(describe(&core.find(key)?.snapshot())),
        (&Method::DELETE, ["machines", key]) => {
            core.delete(&core.find(key)?).await?;
            Ok(json_response(StatusCode::NO_CONTENT, &Value::Null))
        }
        (&Method::GET, ["machines", key, "logs"]) => {
            let m = core.find(key)?;
            let tail = match query.get("tail") {
                Some(t) => Some(t.parse::<usize>().map_err(|_| {
                    Error::InvalidCommand(format!("tail must be a number of lines, got {t:?}"))
                })?),
                None => None,
            };
            let log = m.log().clone();
            let text = tokio::task::spawn_blocking(move || log.tail(tail))
                .await
                .map_err(|e| Error::Store(e.to_string()))?
                .map_err(|e| Error::Store(e.to_string()))?;
            Ok(Response::builder()
                .header("content-type", "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from(text)))
                .unwrap_or_default())
        }
        (&Method::POST, ["machines", key, "exec"]) => {
            let m = core.find(key)?;
            let cmd = match ExecCommand::parse(&body(req).await?) {
                Ok(c) => c,
                Err(e) => return Err(core.report(&m, e).await),
            };
            let rec = core.exec(&m, cmd.request).await?;
            ok(json!({
                "exit_code": rec.exit_code,
                "stdout": String::from_utf8_lossy(&rec.stdout),
                "stderr": String::from_utf8_lossy(&rec.stderr),
            }))
        }
        (&Method::POST, ["machines", key, action]) => {
            let m = core.find(key)?;
            let action = match action_of(action, &query) {
                Ok(a) => a,
                Err(e) => return Err(core.report(&m, e).await),
            };
            core.act(&m, action).await?;
            ok(describe(&m.snapshot()))
        }
        _ => Err(Error::NotFound(format!("{method} {path}"))),
    }
}

/// The typed action a route names, its arguments from the query.
fn action_of(action: &str, query: &HashMap<String, String>) -> Result<Action> {
    let secs = |k: &str, default| match query.get(k) {
        Some(v) => seconds(v, k),
        None => Ok(default),
    };
    Ok(match action {
        "start" => Action::Start,
        "stop" => Action::Stop,
        "restart" => Action::Restart,
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "kill" => Action::Kill,
        "shutdown" => Action::Shutdown {
            grace: secs("timeout", DEFAULT_SHUTDOWN_GRACE)?,
        },
        "wait" => Action::Wait {
            target: wait_target(query.get("status").map(String::as_str).unwrap_or(""))?,
            timeout: secs("timeout", DEFAULT_WAIT_TIMEOUT)?,
        },
        other => return Err(Error::InvalidCommand(format!("unknown action {other:?}"))),
    })
}

/// The create body is the config plus the machine's name.
fn create_body(bytes: &[u8]) -> Result<(String, MachineSpec)> {
    let mut v: Value =
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidConfig(e.to_string()))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| Error::InvalidConfig("the body must be a JSON object".into()))?;
    let name = match obj.remove("name") {
        Some(Value::String(n)) => n,
        _ => {
            return Err(Error::InvalidName {
                name: String::new(),
                reason: "\"name\" (a string) is required",
            })
        }
    };
    let spec = MachineSpec::from_value(v)?;
    Ok((name, spec))
}

async fn body(req: Request<Incoming>) -> Result<Bytes> {
    match Limited::new(req.into_body(), MAX_WRITE).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Error::TooLarge { limit: MAX_WRITE })
        }
        Err(e) => Err(Error::InvalidCommand(format!(
            "reading the request body: {e}"
        ))),
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let body = if v.is_null() {
        Bytes::new()
    } else {
        Bytes::from(v.to_string())
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap_or_default()
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_never_panic() {
        let q = parse_query("status=running&tail=10&x=%41%zz%&y=a+b&%E2%82%AC=1&&=v");
        assert_eq!(q["status"], "running");
        assert_eq!(q["x"], "A%zz%");
        assert_eq!(q["y"], "a b");
        assert_eq!(q["\u{20ac}"], "1");
        assert!(!q.contains_key(""));
    }

    #[test]
    fn routes_map_to_typed_actions() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(action_of("start", &q(&[])).unwrap(), Action::Start);
        assert!(matches!(
            action_of("wait", &q(&[("status", "running"), ("timeout", "2")])).unwrap(),
            Action::Wait { .. }
        ));
        assert!(action_of("wait", &q(&[("status", "running 2")])).is_err());
        assert!(action_of("wait", &q(&[])).is_err());
        assert!(action_of("shutdown", &q(&[("timeout", "x")])).is_err());
        assert!(action_of("explode", &q(&[])).is_err());
    }

    #[test]
    fn create_body_needs_a_name_and_a_valid_spec() {
        let (name, spec) = create_body(br#"{"name":"web","image":"x","vcpu_count":2}"#).unwrap();
        assert_eq!(name, "web");
        assert_eq!(spec.vcpu_count, 2);
        assert!(create_body(br#"{"name":"w","image":"x","kernel_image_path":""}"#).is_ok());
        assert!(create_body(br#"{"image":"x"}"#).is_err());
        assert!(create_body(br#"{"name":"w","bogus":1}"#).is_err());
        assert!(create_body(br#"[1]"#).is_err());
    }
}
