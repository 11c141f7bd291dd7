//! The OpenAPI 3.1 document, generated from the route table ([`ROUTES`])
//! and the types the server serializes (`utoipa::ToSchema` on them), so
//! it cannot describe a route, a parameter or a field the server does not
//! have. `/swagger` renders the same document as a plain HTML page that
//! needs nothing from the network.

use std::collections::BTreeSet;

use serde_json::Value;
use utoipa::openapi::path::{
    HttpMethod as DocMethod, OperationBuilder, ParameterBuilder, ParameterIn, ParameterStyle,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ComponentsBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::server::Server;
use utoipa::openapi::{
    Content, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, Required, Schema,
};
use utoipa::{PartialSchema, ToSchema};

use super::machine::{
    CreateMachine, ErrorJson, EventJson, ExecBody, ExecResult, HealthJson, MachineConfig,
    MachineJson,
};
use super::reply::html_escape;
use super::routes::{Access, HttpMethod, In, Kind, Op, Out, Route, API_PREFIX, ROUTES};

const BEARER: &str = "bearer";

const ABOUT: &str = "Hyperfleet's REST API, compatible with the original Hyperfleet's. \
Every route is served at the root and under /api/v1. A machine is addressed by its id or \
its name. Errors are {\"error\": code, \"message\": text}, the message carrying the whole \
chain of causes. Protected routes take an API key (`hyperfleet apikey create`) as \
\"Authorization: Bearer hf_...\"; on a loopback address or a Unix socket they are open \
until the first key is made. A key with machines:write on a root daemon is root on the \
host (it can bind-mount / into a container) unless the daemon confines host paths \
(--allow-host-paths).";

/// The document.
pub fn document() -> OpenApi {
    // Routes sharing a path share its item, one operation per method.
    let mut paths = utoipa::openapi::Paths::new();
    for r in ROUTES {
        paths.add_path_operation(r.path, vec![method(r.method)], operation(r));
    }

    let mut schemas: Vec<(String, RefOr<Schema>)> = Vec::new();
    add::<MachineJson<'static>>(&mut schemas);
    add::<CreateMachine>(&mut schemas);
    add::<MachineConfig>(&mut schemas);
    add::<ExecBody>(&mut schemas);
    add::<ExecResult<'static>>(&mut schemas);
    add::<HealthJson>(&mut schemas);
    add::<EventJson>(&mut schemas);
    add::<ErrorJson<'static>>(&mut schemas);
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("hf_<43 base62 characters>")
                    .description(Some(
                        "An API key from `hyperfleet apikey create <name> [--scope ...]`",
                    ))
                    .build(),
            ),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Hyperfleet")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(ABOUT))
                .build(),
        )
        .servers(Some([Server::new("/"), Server::new(API_PREFIX)]))
        .paths(paths)
        .components(Some(components))
        .build()
}

fn add<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) {
    out.push((T::name().into_owned(), T::schema()));
    T::schemas(out);
}

fn method(m: HttpMethod) -> DocMethod {
    match m {
        HttpMethod::Get => DocMethod::Get,
        HttpMethod::Post => DocMethod::Post,
        HttpMethod::Put => DocMethod::Put,
        HttpMethod::Delete => DocMethod::Delete,
    }
}

fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn json_content(schema: RefOr<Schema>) -> Content {
    Content::new(Some(schema))
}

fn operation(r: &Route) -> utoipa::openapi::path::Operation {
    let mut op = OperationBuilder::new()
        .operation_id(Some(r.name))
        .summary(Some(r.summary))
        .tag(if r.op == Op::Events {
            "events"
        } else if r.path.starts_with("/machines") {
            "machines"
        } else {
            "meta"
        });
    if r.takes_id() {
        op = op.parameter(
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("the machine's id or its name"))
                .schema(Some(String::schema())),
        );
    }
    for p in r.query {
        let schema: RefOr<Schema> = match p.kind {
            Kind::Status => reference("StatusName"),
            Kind::Runtime => reference("RuntimeType"),
            Kind::Seconds => ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0))
                .into(),
            Kind::Lines => ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .into(),
            Kind::Flag => bool::schema(),
            Kind::WaitTarget | Kind::Machine => String::schema(),
            Kind::EventTypes => ArrayBuilder::new()
                .items(reference("EventType"))
                .min_items(Some(1))
                .into(),
        };
        let mut param = ParameterBuilder::new()
            .name(p.name)
            .parameter_in(ParameterIn::Query)
            .required(if p.required {
                Required::True
            } else {
                Required::False
            })
            .description(Some(p.about))
            .schema(Some(schema));
        if p.kind == Kind::EventTypes {
            // `type=status,error`
            param = param.style(Some(ParameterStyle::Form)).explode(Some(false));
        }
        op = op.parameter(param);
    }
    if let Some(input) = r.input {
        let name = match input {
            In::Create => "CreateMachine",
            In::Config => "MachineConfig",
            In::Exec => "ExecBody",
        };
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .description(Some("JSON, at most 1 MiB"))
                .content("application/json", json_content(reference(name)))
                .build(),
        ));
    }
    let (status, out) = r.ok;
    let ok = ResponseBuilder::new().description(success(r));
    let ok = match out {
        Out::Machine => ok.content("application/json", json_content(reference("Machine"))),
        Out::Machines => ok.content(
            "application/json",
            json_content(ArrayBuilder::new().items(reference("Machine")).into()),
        ),
        Out::Config => ok.content("application/json", json_content(reference("MachineConfig"))),
        Out::Exec => ok.content("application/json", json_content(reference("ExecResult"))),
        Out::Health => ok.content("application/json", json_content(reference("Health"))),
        Out::OpenApi => ok.content(
            "application/json",
            json_content(ObjectBuilder::new().schema_type(Type::Object).into()),
        ),
        Out::Logs => ok.content("text/plain", json_content(String::schema())),
        Out::Events => ok
            .content("application/x-ndjson", json_content(reference("Event")))
            .content("text/event-stream", json_content(String::schema())),
        Out::Page => ok.content("text/html", json_content(String::schema())),
        Out::Nothing => ok,
    };
    let mut responses = ResponsesBuilder::new().response(status.to_string(), ok.build());
    for code in r.failures() {
        responses = responses.response(
            code.to_string(),
            ResponseBuilder::new()
                .description(failure(code))
                .content("application/json", json_content(reference("Error")))
                .build(),
        );
    }
    op = op.responses(responses.build());
    if let Access::Needs(scope) = r.access {
        op = op.security(SecurityRequirement::new(BEARER, [scope.as_str()]));
    }
    op.build()
}

fn success(r: &Route) -> &'static str {
    match r.ok.1 {
        Out::Machine if r.ok.0 == 201 => "created: the machine",
        Out::Machine => "the machine as it is now",
        Out::Machines => "the machines",
        Out::Config => "the spec",
        Out::Exec => "the command finished",
        Out::Health => "the daemon answers",
        Out::Logs => "the log (streamed with follow=true)",
        Out::Events => {
            "streamed, chunked, until the client goes: one Event a line, or with \
             Accept: text/event-stream, `event: TYPE` and `data: EVENT` then a blank line, \
             and a `: keep-alive` comment after 15 s of silence"
        }
        Out::OpenApi => "this document",
        Out::Page => "this document, to read",
        Out::Nothing => "done",
    }
}

/// What a failure status means here.
pub fn failure(code: u16) -> &'static str {
    match code {
        400 => "malformed request: bad JSON, unknown or ill-typed field or query parameter (validation_error, invalid_command, invalid_name)",
        401 => "missing, wrong or revoked API key (unauthorized)",
        403 => "the key lacks the route's scope (forbidden)",
        404 => "no such machine (not_found) or route (no_route)",
        405 => "the route exists with other methods (method_not_allowed)",
        408 => "the body did not arrive in time (request_timeout)",
        409 => "not possible in the machine's status, already so, busy, or the name is taken",
        413 => "body over 1 MiB (too_large)",
        422 => "the spec lacks what starting needs, or a file it names is missing",
        424 => "the image is not in its registry (image_not_found)",
        429 => "too many failed authentication attempts; see Retry-After (rate_limited)",
        500 => "the state store failed",
        501 => "the runtime cannot do this (unsupported)",
        502 => "the runtime failed, or the registry refused credentials",
        503 => "the runtime is unavailable (runtime_unavailable)",
        504 => "timed out: a wait, an exec, a pull without progress, a runtime call",
        507 => "the disk filled up",
        _ => "error",
    }
}

/// `/swagger`: the document as one self-contained HTML page.
pub fn page(doc: &Value) -> String {
    let mut h = String::new();
    h.push_str(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Hyperfleet API</title><style>\
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}\
code,pre{font:13px ui-monospace,monospace}pre{background:#f5f5f5;padding:.6em;overflow:auto}\
table{border-collapse:collapse;margin:.4em 0 1em}td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}\
.m{font-weight:bold;display:inline-block;min-width:4.5em}.GET{color:#1b6}.POST{color:#26c}.PUT{color:#b70}.DELETE{color:#c33}\
section{border-top:1px solid #ccc;padding-top:.5em;margin-top:1em}h3{margin:.2em 0}</style></head><body>",
    );
    let info = &doc["info"];
    h.push_str(&format!(
        "<h1>{} <small>{}</small></h1><p>{}</p>",
        esc(&info["title"]),
        esc(&info["version"]),
        esc(&info["description"])
    ));
    let servers: Vec<String> = doc["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| format!("<code>{}</code>", esc(&s["url"])))
        .collect();
    h.push_str(&format!(
        "<p>Served under {}. The machine-readable document: <a href=\"openapi.json\">openapi.json</a> (OpenAPI {}).</p>",
        servers.join(" and "),
        esc(&doc["openapi"])
    ));
    h.push_str(
        "<h2>Routes</h2><table><tr><th>method</th><th>path</th><th>what</th><th>scope</th></tr>",
    );
    for (path, method, op) in operations(doc) {
        h.push_str(&format!(
            "<tr><td><span class=\"m {m}\">{m}</span></td><td><a href=\"#{id}\"><code>{p}</code></a></td><td>{s}</td><td>{sc}</td></tr>",
            m = method,
            id = esc(&op["operationId"]),
            p = html_escape(path),
            s = esc(&op["summary"]),
            sc = scopes(op),
        ));
    }
    h.push_str("</table>");
    for (path, method, op) in operations(doc) {
        h.push_str(&format!(
            "<section id=\"{}\"><h3><span class=\"m {m}\">{m}</span> <code>{}</code></h3><p>{}</p>",
            esc(&op["operationId"]),
            html_escape(path),
            esc(&op["summary"]),
            m = method
        ));
        let sc = scopes(op);
        if sc != "public" {
            h.push_str(&format!("<p>Needs an API key with scope {sc}.</p>"));
        }
        if let Some(params) = op["parameters"].as_array() {
            h.push_str("<table><tr><th>parameter</th><th>in</th><th>type</th><th>required</th><th>about</th></tr>");
            for p in params {
                h.push_str(&format!(
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&p["name"]),
                    esc(&p["in"]),
                    type_of(&p["schema"]),
                    if p["required"] == true { "yes" } else { "no" },
                    esc(&p["description"])
                ));
            }
            h.push_str("</table>");
        }
        if let Some(body) = op["requestBody"]["content"]["application/json"]["schema"].as_object() {
            h.push_str(&format!(
                "<p>Body: {}</p>",
                type_of(&Value::Object(body.clone()))
            ));
        }
        h.push_str("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>");
        for (code, resp) in op["responses"].as_object().into_iter().flatten() {
            let body = resp["content"]
                .as_object()
                .and_then(|c| c.iter().next())
                .map(|(ty, c)| {
                    format!(
                        "{} <small>{}</small>",
                        type_of(&c["schema"]),
                        html_escape(ty)
                    )
                })
                .unwrap_or_default();
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                html_escape(code),
                esc(&resp["description"]),
                body
            ));
        }
        h.push_str("</table></section>");
    }
    h.push_str("<h2>Schemas</h2>");
    for (name, schema) in doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        h.push_str(&format!(
            "<section id=\"schema-{n}\"><h3>{n}</h3>",
            n = html_escape(name)
        ));
        if let Some(d) = schema["description"].as_str() {
            h.push_str(&format!("<p>{}</p>", html_escape(d)));
        }
        if let Some(values) = schema["enum"].as_array() {
            let v: Vec<String> = values
                .iter()
                .map(|v| format!("<code>{}</code>", esc(v)))
                .collect();
            h.push_str(&format!("<p>One of {}.</p>", v.join(", ")));
        }
        let mut props: Vec<(&String, &Value)> = Vec::new();
        collect_props(doc, schema, &mut props);
        if !props.is_empty() {
            let required: BTreeSet<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            h.push_str("<table><tr><th>field</th><th>type</th><th>about</th></tr>");
            for (field, p) in props {
                h.push_str(&format!(
                    "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td></tr>",
                    html_escape(field),
                    if required.contains(field.as_str()) {
                        " *"
                    } else {
                        ""
                    },
                    type_of(p),
                    esc(&p["description"])
                ));
            }
            h.push_str("</table>");
        }
        h.push_str("</section>");
    }
    h.push_str("</body></html>\n");
    h
}

/// Every (path, method, operation) of the document.
pub fn operations(doc: &Value) -> Vec<(&str, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            if op.get("operationId").is_some() {
                out.push((path.as_str(), method.to_uppercase(), op));
            }
        }
    }
    out
}

fn scopes(op: &Value) -> String {
    let s: Vec<String> = op["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|req| req[BEARER].as_array())
        .flatten()
        .map(|s| format!("<code>{}</code>", esc(s)))
        .collect();
    if s.is_empty() {
        "public".into()
    } else {
        s.join(", ")
    }
}

/// Properties of an object schema, following `allOf` (a flattened struct).
fn collect_props<'a>(doc: &'a Value, schema: &'a Value, out: &mut Vec<(&'a String, &'a Value)>) {
    if let Some(p) = schema["properties"].as_object() {
        out.extend(p.iter());
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let resolved = match part["$ref"].as_str() {
            Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap_or("")],
            None => part,
        };
        collect_props(doc, resolved, out);
    }
}

/// A short rendering of a schema's type, linking to named schemas.
fn type_of(s: &Value) -> String {
    if let Some(r) = s["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("<a href=\"#schema-{n}\">{n}</a>", n = html_escape(name));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(parts) = s[key].as_array() {
            let p: Vec<String> = parts.iter().map(type_of).collect();
            return p.join(" | ");
        }
    }
    let types: Vec<String> = match &s["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    };
    let rendered: Vec<String> = types
        .iter()
        .map(|t| match t.as_str() {
            "array" => format!("array of {}", type_of(&s["items"])),
            "object" if s["additionalProperties"].is_object() => {
                format!("map of {}", type_of(&s["additionalProperties"]))
            }
            other => html_escape(other),
        })
        .collect();
    if rendered.is_empty() {
        "any".into()
    } else {
        rendered.join(" | ")
    }
}

fn esc(v: &Value) -> String {
    match v {
        Value::String(s) => html_escape(s),
        Value::Null => String::new(),
        other => html_escape(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MachineSpec;
    use std::collections::BTreeSet;

    fn doc() -> Value {
        serde_json::to_value(document()).unwrap()
    }

    #[test]
    fn the_document_lists_exactly_the_routes_the_server_serves() {
        let d = doc();
        assert_eq!(d["openapi"], "3.1.0");
        let documented: BTreeSet<(String, String)> = operations(&d)
            .into_iter()
            .map(|(p, m, _)| (m, p.to_owned()))
            .collect();
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
            .collect();
        assert_eq!(documented, served);
        for r in ROUTES {
            let op = &d["paths"][r.path][r.method.as_str().to_lowercase()];
            assert_eq!(op["operationId"], r.name);
            let query: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str())
                .collect();
            let served: BTreeSet<&str> = r.query.iter().map(|p| p.name).collect();
            assert_eq!(query, served, "{}", r.name);
            let statuses: BTreeSet<u16> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse().unwrap())
                .collect();
            assert!(statuses.contains(&r.ok.0), "{}", r.name);
            for code in r.failures() {
                assert!(statuses.contains(&code), "{} lacks {code}", r.name);
            }
            match r.access {
                Access::Public => assert!(op.get("security").is_none(), "{}", r.name),
                Access::Needs(s) => assert_eq!(op["security"][0][BEARER][0], s.as_str()),
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        let d = doc();
        let mut refs = Vec::new();
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|v| walk(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(&d, &mut refs);
        assert!(refs.len() > 10);
        for r in refs {
            let name = r.strip_prefix("#/components/schemas/").expect(&r);
            assert!(d["components"]["schemas"][name].is_object(), "dangling {r}");
        }
    }

    /// The documented spec fields are the ones a spec serializes, for
    /// every runtime; the machine's are the ones a machine serializes.
    #[test]
    fn schemas_name_the_fields_that_are_sent() {
        let d = doc();
        let props = |name: &str| -> BTreeSet<String> {
            d["components"]["schemas"][name]["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{name}"))
                .keys()
                .cloned()
                .collect()
        };
        let mut sent = BTreeSet::new();
        for spec in [
            r#"{}"#,
            r#"{"runtime_type":"firecracker"}"#,
            r#"{"runtime_type":"cloud-hypervisor"}"#,
        ] {
            let v = MachineSpec::parse(spec.as_bytes()).unwrap().to_value();
            sent.extend(v.as_object().unwrap().keys().cloned());
        }
        assert_eq!(props("MachineConfig"), sent);

        let rec = crate::model::MachineRecord {
            seq: 1,
            id: "x".into(),
            name: crate::model::MachineName::parse(b"w").unwrap(),
            spec: MachineSpec::default(),
            status: crate::model::Status::Pending,
            error: String::new(),
            errors: Vec::new(),
            exit: None,
            created_ms: 0,
            updated_ms: 0,
            started_ms: None,
        };
        let v = serde_json::to_value(MachineJson::new(&rec, Default::default())).unwrap();
        let fields: BTreeSet<String> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(props("Machine"), fields);
        for original in [
            "id",
            "name",
            "status",
            "runtime_type",
            "vcpu_count",
            "mem_size_mib",
            "kernel_image_path",
            "kernel_args",
            "rootfs_path",
            "network",
            "image",
            "container_id",
            "pid",
            "created_at",
            "updated_at",
            "error_message",
        ] {
            assert!(fields.contains(original), "{original}");
        }
    }

    /// The documented event fields are exactly those events are sent with.
    #[test]
    fn the_event_schema_names_the_fields_events_have() {
        use crate::model::{Event, Happening, MachineName, RuntimeKind, Status, Subject};
        let d = doc();
        let documented: BTreeSet<String> = d["components"]["schemas"]["Event"]["properties"]
            .as_object()
            .expect("Event")
            .keys()
            .cloned()
            .collect();
        let machine = Subject::Machine {
            seq: 1,
            id: "x".into(),
            name: MachineName::parse(b"w").unwrap(),
        };
        let mut sent = BTreeSet::new();
        for (subject, what) in [
            (machine.clone(), Happening::Created),
            (
                machine.clone(),
                Happening::Status {
                    from: Status::Pending,
                    to: Status::Starting,
                },
            ),
            (machine.clone(), Happening::Error("e".into())),
            (
                machine.clone(),
                Happening::Config {
                    from: RuntimeKind::Docker,
                    to: RuntimeKind::Firecracker,
                },
            ),
            (
                machine.clone(),
                Happening::Exec {
                    exit_code: 0,
                    timed_out: false,
                },
            ),
            (
                machine,
                Happening::Deleted {
                    status: Status::Stopped,
                    runtime: RuntimeKind::Docker,
                },
            ),
            (
                Subject::Runtime(RuntimeKind::Docker),
                Happening::Runtime {
                    available: true,
                    text: "t".into(),
                },
            ),
            (Subject::Stream, Happening::Dropped(2)),
        ] {
            let v = Event::new(subject, what).json();
            sent.extend(v.as_object().unwrap().keys().cloned());
        }
        assert_eq!(documented, sent);
    }

    #[test]
    fn the_page_shows_every_route_and_schema_and_loads_nothing() {
        let d = doc();
        let html = page(&d);
        for r in ROUTES {
            assert!(html.contains(&format!("id=\"{}\"", r.name)), "{}", r.name);
            assert!(html.contains(&html_escape(r.path)));
        }
        for name in d["components"]["schemas"].as_object().unwrap().keys() {
            assert!(html.contains(&format!("id=\"schema-{name}\"")), "{name}");
        }
        assert!(
            !html.contains("<script"),
            "the page must work offline, without scripts"
        );
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
