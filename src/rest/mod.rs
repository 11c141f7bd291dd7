//! The REST front end, compatible with the original Hyperfleet API. Like the
//! filesystem it keeps no state of its own beyond API keys and HTTP
//! plumbing: each route parses its request and makes a typed core call
//! (the same [`Action`](crate::model::Action)s `ctl` submits); each error
//! becomes the HTTP status its variant maps to, with a JSON body
//! `{"error": code, "message": text}`.
//!
//! ```text
//! routes.rs    the route table: methods, paths, scopes, query, bodies, replies
//! handlers.rs  what each route does: the core call it makes, what it renders
//! machine.rs   the machine JSON (the original's fields, then ours) and the
//!              other reply and body types, which also give the OpenAPI schemas
//! logs.rs      log tails and follows
//! events.rs    change events, streamed as lines of JSON or Server-Sent Events
//! auth.rs      API keys: minting, digests, scopes, rate limiting of failures
//! paths.rs     --allow-host-paths
//! openapi.rs   the OpenAPI 3.1 document from the route table; /swagger
//! reply.rs     replies (streamed ones too), errors, bodies with their limits,
//!              query strings
//! server.rs    listeners (TCP, Unix socket), connections, timeouts
//! ```

pub mod auth;
mod events;
mod handlers;
mod logs;
pub mod machine;
pub mod openapi;
pub mod paths;
mod reply;
pub mod routes;
mod server;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use server::{Listen, Options, Server};

use crate::core::Core;
use crate::model::MAX_WRITE;
use auth::Auth;
use paths::HostPaths;

/// Limits on what a client may cost the daemon.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (413 past it).
    pub body: usize,
    /// Time a client has to send a request's headers, and the longest a
    /// kept-alive connection may sit idle.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body (408 past it).
    pub body_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body: MAX_WRITE,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

impl Limits {
    /// Defaults; `HYPERFLEET_REST_TIMEOUT_SECS` sets both timeouts.
    pub fn from_env() -> Limits {
        let mut l = Limits::default();
        if let Some(secs) = std::env::var("HYPERFLEET_REST_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| *v > 0.0)
        {
            l.header_timeout = Duration::from_secs_f64(secs);
            l.body_timeout = Duration::from_secs_f64(secs);
        }
        l
    }
}

/// What every request handler shares.
pub struct Api {
    pub core: Arc<Core>,
    pub auth: Auth,
    pub paths: HostPaths,
    pub limits: Limits,
    /// The OpenAPI document and its page, rendered once.
    pub openapi: Bytes,
    pub swagger: Bytes,
    pub list_cache: machine::ListCache,
}

impl Api {
    pub fn new(core: Arc<Core>, auth: Auth, paths: HostPaths, limits: Limits) -> Api {
        let doc = serde_json::to_value(openapi::document()).unwrap_or_default();
        let swagger = openapi::page(&doc);
        Api {
            core,
            auth,
            paths,
            limits,
            openapi: Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()),
            swagger: Bytes::from(swagger),
            list_cache: machine::ListCache::default(),
        }
    }
}
