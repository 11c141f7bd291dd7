//! The route table: every route the server answers, with its scope, query
//! parameters, body and replies. The server matches requests against it,
//! checks scopes and query parameters from it, and the OpenAPI document is
//! generated from it, so what is served and what is described are one list.
//!
//! Every route is served at the root and under `/api/v1`.

use std::time::Duration;

use hyper::header::ALLOW;
use hyper::{Method, StatusCode};

use super::auth::Scope;
use super::reply::{percent_decode, query_pairs, Problem};
use crate::error::Error;
use crate::model::action::{seconds, wait_target};
use crate::model::{Happening, RuntimeKind, Status, Verb, WaitTarget};

/// The prefix the original moved its routes under; the root serves them too.
pub const API_PREFIX: &str = "/api/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Delete,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
        }
    }

    fn of(m: &Method) -> Option<HttpMethod> {
        Some(match *m {
            Method::GET => HttpMethod::Get,
            Method::POST => HttpMethod::Post,
            Method::PUT => HttpMethod::Put,
            Method::DELETE => HttpMethod::Delete,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Needs(Scope),
}

/// What a route does; the handler dispatches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Health,
    OpenApi,
    Swagger,
    List,
    Create,
    Get,
    Delete,
    GetConfig,
    SetConfig,
    /// A lifecycle verb: start, stop, restart, pause, resume, kill, shutdown.
    Act(Verb),
    Wait,
    Exec,
    Logs,
    /// The change events, of every machine or of one.
    Events,
}

/// What a route's success reply carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    Machine,
    Machines,
    Config,
    Exec,
    Health,
    Logs,
    /// A stream of events, one JSON object a line or Server-Sent Events.
    Events,
    OpenApi,
    Page,
    Nothing,
}

/// What a route's request body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Create,
    Config,
    Exec,
}

/// The type of a query parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Status,
    Runtime,
    /// A number of seconds, fractions allowed.
    Seconds,
    /// A number of lines.
    Lines,
    /// `true` or `false`.
    Flag,
    /// A status, or `agent`.
    WaitTarget,
    /// A machine's id or name.
    Machine,
    /// Event types, comma-separated (see [`Happening::KINDS`]).
    EventTypes,
}

#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub about: &'static str,
}

#[derive(Debug)]
pub struct Route {
    pub method: HttpMethod,
    /// With `{id}` for the machine (its id or its name).
    pub path: &'static str,
    pub op: Op,
    /// The OpenAPI operationId.
    pub name: &'static str,
    pub access: Access,
    pub summary: &'static str,
    pub query: &'static [Param],
    pub input: Option<In>,
    /// Success status and what it carries.
    pub ok: (u16, Out),
    /// Failures particular to this route; those every route of its kind can
    /// have (401/403/429, 404 for `{id}`, 400/408/413 for a body) are added
    /// by [`Route::failures`].
    pub fails: &'static [u16],
}

const READ: Access = Access::Needs(Scope::Read);
const WRITE: Access = Access::Needs(Scope::Write);

const FILTERS: &[Param] = &[
    Param {
        name: "runtime_type",
        kind: Kind::Runtime,
        required: false,
        about: "only machines of this runtime",
    },
    Param {
        name: "status",
        kind: Kind::Status,
        required: false,
        about: "only machines in this status",
    },
];
const WAIT: &[Param] = &[
    Param {
        name: "status",
        kind: Kind::WaitTarget,
        required: true,
        about: "the status to wait for (or `agent`: the guest agent answers)",
    },
    Param {
        name: "timeout",
        kind: Kind::Seconds,
        required: false,
        about: "seconds before giving up with 504; default 300",
    },
];
const SHUTDOWN: &[Param] = &[Param {
    name: "timeout",
    kind: Kind::Seconds,
    required: false,
    about: "grace period in seconds before the workload is killed; default 10",
}];
const LOGS: &[Param] = &[
    Param {
        name: "tail",
        kind: Kind::Lines,
        required: false,
        about: "only the last N lines",
    },
    Param {
        name: "follow",
        kind: Kind::Flag,
        required: false,
        about: "keep streaming new output until the run ends or the client goes",
    },
];
const TYPES: Param = Param {
    name: "type",
    kind: Kind::EventTypes,
    required: false,
    about: "only events of these types, comma-separated; `dropped` markers always come",
};
const EVENTS: &[Param] = &[
    Param {
        name: "machine",
        kind: Kind::Machine,
        required: false,
        about: "only this machine's events (its id or name); the stream ends after its `deleted`",
    },
    TYPES,
];
const MACHINE_EVENTS: &[Param] = &[TYPES];

/// What a lifecycle verb can fail with once the machine is found.
const ACT_FAILS: &[u16] = &[409, 422, 424, 500, 501, 502, 503, 504, 507];

macro_rules! verb {
    ($verb:ident, $path:literal, $name:literal, $summary:literal, $query:expr) => {
        Route {
            method: HttpMethod::Post,
            path: $path,
            op: Op::Act(Verb::$verb),
            name: $name,
            access: WRITE,
            summary: $summary,
            query: $query,
            input: None,
            ok: (200, Out::Machine),
            fails: ACT_FAILS,
        }
    };
}

pub static ROUTES: &[Route] = &[
    Route {
        method: HttpMethod::Get,
        path: "/health",
        op: Op::Health,
        name: "health",
        access: Access::Public,
        summary: "Whether the daemon answers, and which runtimes are usable",
        query: &[],
        input: None,
        ok: (200, Out::Health),
        fails: &[],
    },
    Route {
        method: HttpMethod::Get,
        path: "/openapi.json",
        op: Op::OpenApi,
        name: "openapi",
        access: Access::Public,
        summary: "This document",
        query: &[],
        input: None,
        ok: (200, Out::OpenApi),
        fails: &[],
    },
    Route {
        method: HttpMethod::Get,
        path: "/swagger",
        op: Op::Swagger,
        name: "swagger",
        access: Access::Public,
        summary: "This document as a page to read",
        query: &[],
        input: None,
        ok: (200, Out::Page),
        fails: &[],
    },
    Route {
        method: HttpMethod::Get,
        path: "/machines",
        op: Op::List,
        name: "listMachines",
        access: READ,
        summary: "List machines, optionally filtered (container_id and pid are null here)",
        query: FILTERS,
        input: None,
        ok: (200, Out::Machines),
        fails: &[],
    },
    Route {
        method: HttpMethod::Post,
        path: "/machines",
        op: Op::Create,
        name: "createMachine",
        access: WRITE,
        summary: "Create a machine (pending)",
        query: &[],
        input: Some(In::Create),
        ok: (201, Out::Machine),
        fails: &[409, 500],
    },
    Route {
        method: HttpMethod::Get,
        path: "/machines/{id}",
        op: Op::Get,
        name: "getMachine",
        access: READ,
        summary: "A machine, with its container id and pid from the runtime",
        query: &[],
        input: None,
        ok: (200, Out::Machine),
        fails: &[],
    },
    Route {
        method: HttpMethod::Delete,
        path: "/machines/{id}",
        op: Op::Delete,
        name: "deleteMachine",
        access: WRITE,
        summary: "Stop a machine if it runs, then delete it and everything it owns",
        query: &[],
        input: None,
        ok: (204, Out::Nothing),
        fails: &[409, 500, 502, 503, 504],
    },
    Route {
        method: HttpMethod::Get,
        path: "/machines/{id}/config",
        op: Op::GetConfig,
        name: "getMachineConfig",
        access: READ,
        summary: "A machine's spec (what its config file holds)",
        query: &[],
        input: None,
        ok: (200, Out::Config),
        fails: &[],
    },
    Route {
        method: HttpMethod::Put,
        path: "/machines/{id}/config",
        op: Op::SetConfig,
        name: "setMachineConfig",
        access: WRITE,
        summary: "Replace a machine's spec (while it holds no running workload)",
        query: &[],
        input: Some(In::Config),
        ok: (200, Out::Machine),
        fails: &[409, 500, 502, 503],
    },
    verb!(
        Start,
        "/machines/{id}/start",
        "startMachine",
        "Start a machine; returns once it runs",
        &[]
    ),
    verb!(
        Stop,
        "/machines/{id}/stop",
        "stopMachine",
        "Stop a machine (SIGTERM, SIGKILL after 10 s)",
        &[]
    ),
    verb!(
        Restart,
        "/machines/{id}/restart",
        "restartMachine",
        "Stop a machine if it runs, then start it",
        &[]
    ),
    verb!(
        Pause,
        "/machines/{id}/pause",
        "pauseMachine",
        "Pause a running machine",
        &[]
    ),
    verb!(
        Resume,
        "/machines/{id}/resume",
        "resumeMachine",
        "Resume a paused machine",
        &[]
    ),
    verb!(
        Kill,
        "/machines/{id}/kill",
        "killMachine",
        "Kill a machine (SIGKILL)",
        &[]
    ),
    verb!(
        Shutdown,
        "/machines/{id}/shutdown",
        "shutdownMachine",
        "Stop a machine with a chosen grace period",
        SHUTDOWN
    ),
    Route {
        method: HttpMethod::Get,
        path: "/machines/{id}/wait",
        op: Op::Wait,
        name: "waitMachine",
        access: READ,
        summary: "Block until the machine has had a status since the call began",
        query: WAIT,
        input: None,
        ok: (200, Out::Machine),
        fails: &[501, 504],
    },
    Route {
        method: HttpMethod::Post,
        path: "/machines/{id}/wait",
        op: Op::Wait,
        name: "waitMachinePost",
        access: READ,
        summary: "Block until the machine has had a status since the call began",
        query: WAIT,
        input: None,
        ok: (200, Out::Machine),
        fails: &[501, 504],
    },
    Route {
        method: HttpMethod::Post,
        path: "/machines/{id}/exec",
        op: Op::Exec,
        name: "execInMachine",
        access: WRITE,
        summary: "Run a command in a running machine; a non-zero exit is a result, not an error",
        query: &[],
        input: Some(In::Exec),
        ok: (200, Out::Exec),
        fails: &[409, 500, 502, 503, 504],
    },
    Route {
        method: HttpMethod::Get,
        path: "/machines/{id}/logs",
        op: Op::Logs,
        name: "machineLogs",
        access: READ,
        summary: "The workload's output of its current or last run; with follow=true, streamed",
        query: LOGS,
        input: None,
        ok: (200, Out::Logs),
        fails: &[500],
    },
    Route {
        method: HttpMethod::Get,
        path: "/events",
        op: Op::Events,
        name: "events",
        access: READ,
        summary:
            "Every change from now on, streamed as it happens (Accept: text/event-stream for SSE)",
        query: EVENTS,
        input: None,
        ok: (200, Out::Events),
        fails: &[404],
    },
    Route {
        method: HttpMethod::Get,
        path: "/machines/{id}/events",
        op: Op::Events,
        name: "machineEvents",
        access: READ,
        summary: "A machine's changes from now on, streamed until it is deleted",
        query: MACHINE_EVENTS,
        input: None,
        ok: (200, Out::Events),
        fails: &[],
    },
];

impl Route {
    pub fn takes_id(&self) -> bool {
        self.path.contains("{id}")
    }

    /// Every failure status this route can answer with, ascending.
    pub fn failures(&self) -> Vec<u16> {
        let mut out: Vec<u16> = self.fails.to_vec();
        if matches!(self.access, Access::Needs(_)) {
            out.extend([400, 401, 403, 429]);
        }
        if self.takes_id() {
            out.push(404);
        }
        if self.input.is_some() {
            out.extend([400, 408, 413]);
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The route a request names and the `{id}` in it, or 404 (no such path)
/// or 405 (the path exists, not with this method), naming what was asked.
pub fn find(method: &Method, raw_path: &str) -> Result<(&'static Route, Option<String>), Problem> {
    let path = raw_path
        .strip_prefix(API_PREFIX)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .unwrap_or(raw_path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut allowed = Vec::new();
    for route in ROUTES {
        let Some(id) = matches(route.path, &segments) else {
            continue;
        };
        if HttpMethod::of(method) == Some(route.method) {
            return Ok((route, id));
        }
        allowed.push(route.method.as_str());
    }
    if allowed.is_empty() {
        return Err(Problem::from(Error::NoRoute(format!(
            "{method} {raw_path}"
        ))));
    }
    allowed.dedup();
    Err(Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {raw_path}; it takes {}",
            allowed.join(", ")
        ),
    )
    .with_header(ALLOW, allowed.join(", ")))
}

/// `Some(id)` (or `Some(None)` for a route without one) if `segments` fit
/// the template.
fn matches(template: &str, segments: &[&str]) -> Option<Option<String>> {
    let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut id = None;
    for (part, seg) in parts.iter().zip(segments) {
        if *part == "{id}" {
            id = Some(percent_decode(seg));
        } else if part != seg {
            return None;
        }
    }
    Some(id)
}

/// A query parameter's value, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Status(Status),
    Runtime(RuntimeKind),
    Seconds(Duration),
    Lines(usize),
    Flag(bool),
    Target(WaitTarget),
    Text(String),
    EventTypes(Vec<&'static str>),
}

/// The query of a request, checked against its route: every parameter
/// known, given once, of the right type; required ones present.
#[derive(Debug, Default)]
pub struct Args(Vec<(&'static str, Arg)>);

impl Args {
    pub fn parse(route: &Route, query: Option<&str>) -> Result<Args, Problem> {
        let bad = |msg: String| Problem::from(Error::InvalidCommand(msg));
        let mut args = Args::default();
        for (name, value) in query_pairs(query.unwrap_or("")) {
            let Some(p) = route.query.iter().find(|p| p.name == name) else {
                let takes = if route.query.is_empty() {
                    "no query parameters".to_owned()
                } else {
                    route
                        .query
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(bad(format!(
                    "unknown query parameter {name:?} for {} {}; it takes {takes}",
                    route.method.as_str(),
                    route.path
                )));
            };
            if args.get(p.name).is_some() {
                return Err(bad(format!("query parameter {name:?} is given twice")));
            }
            let arg = match p.kind {
                Kind::Status => Arg::Status(
                    value
                        .parse()
                        .map_err(|e: String| bad(format!("{name}: {e}")))?,
                ),
                Kind::Runtime => Arg::Runtime(
                    value
                        .parse()
                        .map_err(|_| bad(format!("{name}: unknown runtime_type {value:?}")))?,
                ),
                Kind::Seconds => Arg::Seconds(seconds(&value, p.name).map_err(Problem::from)?),
                Kind::Lines => Arg::Lines(value.parse().map_err(|_| {
                    bad(format!("{name} must be a number of lines, got {value:?}"))
                })?),
                Kind::Flag => Arg::Flag(match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad(format!("{name} must be true or false, got {value:?}"))),
                }),
                Kind::WaitTarget => {
                    Arg::Target(wait_target(&value).map_err(|e| Problem::from(e.context(name)))?)
                }
                Kind::Machine => Arg::Text(value),
                Kind::EventTypes => {
                    Arg::EventTypes(event_types(&value).map_err(|e| bad(format!("{name}: {e}")))?)
                }
            };
            args.0.push((p.name, arg));
        }
        if let Some(p) = route
            .query
            .iter()
            .find(|p| p.required && args.get(p.name).is_none())
        {
            return Err(bad(format!("query parameter {:?} is required", p.name)));
        }
        Ok(args)
    }

    pub fn get(&self, name: &str) -> Option<&Arg> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, a)| a)
    }

    pub fn seconds(&self, name: &str) -> Option<Duration> {
        match self.get(name) {
            Some(Arg::Seconds(d)) => Some(*d),
            _ => None,
        }
    }

    pub fn lines(&self, name: &str) -> Option<usize> {
        match self.get(name) {
            Some(Arg::Lines(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Arg::Flag(true)))
    }

    pub fn status(&self, name: &str) -> Option<Status> {
        match self.get(name) {
            Some(Arg::Status(s)) => Some(*s),
            _ => None,
        }
    }

    pub fn runtime(&self, name: &str) -> Option<RuntimeKind> {
        match self.get(name) {
            Some(Arg::Runtime(k)) => Some(*k),
            _ => None,
        }
    }

    pub fn target(&self, name: &str) -> Option<WaitTarget> {
        match self.get(name) {
            Some(Arg::Target(t)) => Some(*t),
            _ => None,
        }
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Arg::Text(t)) => Some(t),
            _ => None,
        }
    }

    pub fn event_types(&self, name: &str) -> Option<&[&'static str]> {
        match self.get(name) {
            Some(Arg::EventTypes(t)) => Some(t),
            _ => None,
        }
    }
}

/// `status,error`: each a type of [`Happening::KINDS`], at least one.
fn event_types(list: &str) -> Result<Vec<&'static str>, String> {
    let mut out = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let Some(kind) = Happening::KINDS.iter().find(|k| **k == word) else {
            return Err(format!(
                "unknown event type {word:?}; types are {}",
                Happening::KINDS.join(", ")
            ));
        };
        if !out.contains(kind) {
            out.push(*kind);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "name at least one event type of {}",
            Happening::KINDS.join(", ")
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str) -> Result<(&'static str, Option<String>), u16> {
        find(&method, path)
            .map(|(r, id)| (r.name, id))
            .map_err(|p| p.status.as_u16())
    }

    #[test]
    fn paths_match_at_the_root_and_under_the_prefix() {
        for prefix in ["", "/api/v1"] {
            let p = |s: &str| format!("{prefix}{s}");
            assert_eq!(
                route(Method::GET, &p("/machines")),
                Ok(("listMachines", None))
            );
            assert_eq!(
                route(Method::GET, &p("/machines/")),
                Ok(("listMachines", None))
            );
            assert_eq!(
                route(Method::POST, &p("/machines/web/start")),
                Ok(("startMachine", Some("web".into())))
            );
            assert_eq!(
                route(Method::GET, &p("/machines/a%2Db")),
                Ok(("getMachine", Some("a-b".into())))
            );
            assert_eq!(
                route(Method::GET, &p("/machines/web/wait")).unwrap().0,
                "waitMachine"
            );
            assert_eq!(
                route(Method::POST, &p("/machines/web/wait")).unwrap().0,
                "waitMachinePost"
            );
            assert_eq!(route(Method::GET, &p("/machines/web/explode")), Err(404));
            assert_eq!(route(Method::PATCH, &p("/machines/web")), Err(405));
            assert_eq!(route(Method::GET, &p("/machines/web/start")), Err(405));
        }
        assert_eq!(route(Method::GET, "/api/v1x/machines"), Err(404));
        assert_eq!(route(Method::GET, "/api/v2/machines"), Err(404));
        let p = find(&Method::DELETE, "/machines").unwrap_err();
        assert_eq!(p.headers[0].1, "GET, POST");
        assert!(
            p.message.contains("DELETE is not allowed on /machines"),
            "{}",
            p.message
        );
    }

    #[test]
    fn queries_are_checked_against_the_route() {
        let (wait, _) = find(&Method::GET, "/machines/w/wait").unwrap();
        let a = Args::parse(wait, Some("status=running&timeout=2.5")).unwrap();
        assert_eq!(
            a.target("status"),
            Some(WaitTarget::Status(Status::Running))
        );
        assert_eq!(a.seconds("timeout"), Some(Duration::from_millis(2500)));
        for bad in [
            "",
            "timeout=2",
            "status=runing",
            "status=running&timeout=x",
            "status=running&timeout=-1",
            "status=running&status=stopped",
            "status=running&colour=red",
        ] {
            let p = Args::parse(wait, Some(bad)).unwrap_err();
            assert_eq!(p.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let (list, _) = find(&Method::GET, "/machines").unwrap();
        let a = Args::parse(list, Some("runtime_type=cloud-hypervisor&status=failed")).unwrap();
        assert_eq!(
            a.runtime("runtime_type"),
            Some(RuntimeKind::CloudHypervisor)
        );
        assert_eq!(a.status("status"), Some(Status::Failed));
        assert!(Args::parse(list, Some("runtime_type=qemu")).is_err());
        let (logs, _) = find(&Method::GET, "/machines/w/logs").unwrap();
        assert!(Args::parse(logs, Some("follow=true&tail=3"))
            .unwrap()
            .flag("follow"));
        assert!(Args::parse(logs, Some("follow=yes")).is_err());
        let (events, _) = find(&Method::GET, "/events").unwrap();
        let a = Args::parse(events, Some("type=status,%20error,status&machine=web")).unwrap();
        assert_eq!(a.event_types("type"), Some(&["status", "error"][..]));
        assert_eq!(a.text("machine"), Some("web"));
        for bad in ["type=stauts", "type=", "type=,", "type=updated", "since=0"] {
            let p = Args::parse(events, Some(bad)).unwrap_err();
            assert_eq!(p.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let p = Args::parse(events, Some("type=status,bogus")).unwrap_err();
        assert!(
            p.message.contains("\"bogus\"") && p.message.contains("created, status"),
            "{}",
            p.message
        );
        let (one, id) = find(&Method::GET, "/api/v1/machines/web/events").unwrap();
        assert_eq!((one.name, id.as_deref()), ("machineEvents", Some("web")));
        assert!(Args::parse(one, Some("type=deleted")).is_ok());
        assert!(Args::parse(one, Some("machine=other")).is_err());
        let (get, _) = find(&Method::GET, "/machines/w").unwrap();
        let p = Args::parse(get, Some("verbose=1")).unwrap_err();
        assert!(
            p.message.contains("takes no query parameters"),
            "{}",
            p.message
        );
    }

    #[test]
    fn each_route_is_listed_once_with_a_unique_name() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method.as_str(),
                r.path
            );
        }
        let names: std::collections::HashSet<_> = ROUTES.iter().map(|r| r.name).collect();
        assert_eq!(names.len(), ROUTES.len());
    }
}
