//! API keys: who may call which route.
//!
//! A key is `hf_` and 43 random base62 characters (256 bits), shown once
//! when it is made (`hyperfleet apikey create`) and stored only as its
//! SHA-256 digest, beside its first 11 characters (the prefix), which are
//! not secret and find the row. A request proves a key by sending it as a
//! bearer token; its digest is compared in constant time. Unsalted SHA-256
//! is enough because keys are random, not chosen: there is no dictionary.
//!
//! Scopes: `machines:read` (GET routes, `wait`, `logs`, `events`), `machines:write`
//! (everything that changes something, and `exec`). A key made without
//! `--scope` has both.
//!
//! When auth applies: on a loopback address or a Unix socket, as soon as a
//! key has ever been made (a revoked key does not turn auth back off); on any
//! other address always, and the daemon refuses to listen there without a
//! live key. The key table is re-read whenever another connection has
//! committed to the database (`PRAGMA data_version`), so a key made or
//! revoked while the daemon runs counts at the next request.
//!
//! Failed attempts (a wrong, unknown or revoked key) are rate-limited per
//! peer (IP address, or uid on a Unix socket) with a token bucket: a burst
//! of [`FAIL_BURST`], then one more per [`FAIL_REFILL`]. A peer out of
//! tokens gets 429 with `Retry-After` for every protected route, before its
//! key is even looked at.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::StatusCode;
use sha2::{Digest, Sha256};

use super::reply::Problem;
use crate::error::{Error, Result};
use crate::model::now_ms;
use crate::store::{KeyRecord, KeyStore, SqliteStore};

pub const KEY_PREFIX: &str = "hf_";
/// Random characters after `hf_`: 43 of base62 carry 256 bits.
const KEY_RANDOM_CHARS: usize = 43;
/// `hf_` and 8 characters: the part stored in clear.
pub const PREFIX_LEN: usize = 11;
/// Failed attempts a peer may make at once...
pub const FAIL_BURST: f64 = 10.0;
/// ...and how often it earns one more.
pub const FAIL_REFILL: Duration = Duration::from_secs(5);
/// last_used is written at most this often per key.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Past this many peers with failures, those that have recovered are forgotten.
const MAX_TRACKED_PEERS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Read, Scope::Write];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "machines:read",
            Scope::Write => "machines:write",
        }
    }
}

impl FromStr for Scope {
    type Err = Error;
    fn from_str(s: &str) -> Result<Scope> {
        Scope::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidCommand(format!(
                    "unknown scope {s:?}; scopes are {}",
                    Scope::ALL.map(Scope::as_str).join(", ")
                ))
            })
    }
}

/// A key just made: the key itself (shown once, never stored) and its row.
pub struct NewKey {
    pub key: String,
    pub record: KeyRecord,
}

/// Makes a key named `name` with `scopes` (all of them if empty); `None` if
/// a live key already has that name.
pub fn mint(store: &dyn KeyStore, name: &str, scopes: &[Scope]) -> Result<Option<NewKey>> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        return Err(Error::InvalidCommand(format!(
            "key name {name:?} must be 1..=64 of letters, digits, '-', '_', '.' and '@'"
        )));
    }
    let mut scopes: Vec<Scope> = if scopes.is_empty() {
        Scope::ALL.to_vec()
    } else {
        scopes.to_vec()
    };
    scopes.sort();
    scopes.dedup();
    // A prefix collision (47 bits) is next to impossible; a retry settles it.
    let mut last = None;
    for _ in 0..3 {
        let key = random_key()?;
        let record = KeyRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            prefix: key[..PREFIX_LEN].to_owned(),
            hash: digest(&key),
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            created_ms: now_ms(),
            last_used_ms: None,
            revoked_ms: None,
        };
        match store.insert_key(&record) {
            Ok(Some(record)) => return Ok(Some(NewKey { key, record })),
            Ok(None) => return Ok(None),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Store("cannot store the key".into())))
}

fn random_key() -> Result<String> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::from(KEY_PREFIX);
    while out.len() < KEY_PREFIX.len() + KEY_RANDOM_CHARS {
        let mut buf = [0u8; 64];
        fill_random(&mut buf)?;
        // Rejection sampling: 248 = 4 * 62, so every character is equally likely.
        for b in buf.into_iter().filter(|b| *b < 248) {
            if out.len() == KEY_PREFIX.len() + KEY_RANDOM_CHARS {
                break;
            }
            out.push(ALPHABET[(b % 62) as usize] as char);
        }
    }
    Ok(out)
}

fn fill_random(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most the remaining length into our own buffer.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("reading random bytes for a key", e));
        }
        filled += n as usize;
    }
    Ok(())
}

pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Equality whose time does not depend on where the digests differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Who is asking, for rate limiting and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    Ip(IpAddr),
    Uid(u32),
    Unknown,
}

impl Peer {
    pub fn ip(ip: IpAddr) -> Peer {
        Peer::Ip(ip.to_canonical())
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Ip(ip) => write!(f, "{ip}"),
            Peer::Uid(uid) => write!(f, "uid {uid}"),
            Peer::Unknown => f.write_str("unknown peer"),
        }
    }
}

/// Whether a listener lets requests through while no key has been made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Loopback or a Unix socket: open until the first key is made.
    OpenUntilFirstKey,
    /// Any other address: a key, always.
    Always,
}

struct Cache {
    version: Option<i64>,
    by_prefix: HashMap<String, KeyRecord>,
    /// A key has been made at some point (revoked or not).
    any: bool,
    touched: HashMap<String, Instant>,
}

pub struct Auth {
    store: SqliteStore,
    /// A second connection, so a last_used write waiting on the database
    /// never holds up a request being authenticated.
    toucher: Arc<SqliteStore>,
    cache: Mutex<Cache>,
    limiter: Limiter,
}

impl Auth {
    /// Keys of the state database at `db`.
    pub fn open(db: &Path) -> Result<Auth> {
        Ok(Auth {
            store: SqliteStore::open(db)?,
            toucher: Arc::new(SqliteStore::open(db)?),
            cache: Mutex::new(Cache {
                version: None,
                by_prefix: HashMap::new(),
                any: false,
                touched: HashMap::new(),
            }),
            limiter: Limiter::new(FAIL_BURST, FAIL_REFILL),
        })
    }

    /// Keys that would let someone in now.
    pub fn live_keys(&self) -> Result<usize> {
        Ok(self
            .store
            .keys()?
            .iter()
            .filter(|k| !k.is_revoked())
            .count())
    }

    fn cache(&self) -> Result<std::sync::MutexGuard<'_, Cache>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Read before the keys, so a change committed in between is seen next time.
        let version = self.store.change_counter()?;
        if cache.version != Some(version) {
            let keys = self.store.keys()?;
            cache.any = !keys.is_empty();
            cache.by_prefix = keys.into_iter().map(|k| (k.prefix.clone(), k)).collect();
            cache.version = Some(version);
        }
        Ok(cache)
    }

    /// Lets a request through or says why not (401, 403, 429).
    pub fn check(
        &self,
        peer: Peer,
        gate: Gate,
        authorization: Option<&HeaderValue>,
        need: Scope,
    ) -> Result<(), Problem> {
        let now = Instant::now();
        if let Some(wait) = self.limiter.blocked(peer, now) {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many failed authentication attempts from {peer}; retry in {secs}s"),
            )
            .with_header(RETRY_AFTER, secs.to_string()));
        }
        let mut cache = self.cache().map_err(Problem::from)?;
        if !cache.any && gate == Gate::OpenUntilFirstKey {
            return Ok(());
        }
        let token = match authorization.map(|h| h.to_str()) {
            None => {
                return Err(unauthorized(
                    "missing API key: send \"Authorization: Bearer hf_...\"",
                ))
            }
            Some(Ok(h)) => match h.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
                _ => {
                    return Err(unauthorized(
                        "the Authorization header must be \"Bearer <key>\"",
                    ))
                }
            },
            Some(Err(_)) => "",
        };
        // Digest and compare whether or not the prefix is known, so a wrong
        // key costs the same either way.
        let d = digest(token);
        let found = token
            .get(..PREFIX_LEN)
            .and_then(|p| cache.by_prefix.get(p))
            .filter(|k| same(&k.hash, &d));
        let Some(key) = found else {
            self.limiter.fail(peer, now);
            tracing::warn!(%peer, "rest: request with an invalid API key");
            return Err(unauthorized("invalid API key"));
        };
        if key.is_revoked() {
            self.limiter.fail(peer, now);
            tracing::warn!(%peer, key = %key.name, "rest: request with a revoked API key");
            return Err(unauthorized(format!("API key {:?} was revoked", key.name)));
        }
        if !key.scopes.iter().any(|s| s == need.as_str()) {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "API key {:?} lacks the {} scope (it has: {})",
                    key.name,
                    need.as_str(),
                    key.scopes.join(", ")
                ),
            ));
        }
        let (id, name) = (key.id.clone(), key.name.clone());
        let due = cache
            .touched
            .get(&id)
            .is_none_or(|t| now.duration_since(*t) >= TOUCH_EVERY);
        if due {
            cache.touched.insert(id.clone(), now);
            let toucher = self.toucher.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = toucher.touch_key(&id, now_ms()) {
                    tracing::debug!(key = %name, "rest: cannot record key use: {}", e.report());
                }
            });
        }
        Ok(())
    }
}

fn unauthorized(message: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        .with_header(WWW_AUTHENTICATE, "Bearer")
}

/// Token buckets of failed attempts, per peer.
struct Limiter {
    burst: f64,
    refill: Duration,
    buckets: Mutex<HashMap<Peer, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Limiter {
    fn new(burst: f64, refill: Duration) -> Limiter {
        Limiter {
            burst,
            refill,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let earned = now.saturating_duration_since(b.at).as_secs_f64() / self.refill.as_secs_f64();
        Bucket {
            tokens: (b.tokens + earned).min(self.burst),
            at: now,
        }
    }

    /// How long `peer` must wait before its next attempt, if it must.
    fn blocked(&self, peer: Peer, now: Instant) -> Option<Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = self.refilled(*buckets.get(&peer)?, now);
        (b.tokens < 1.0).then(|| self.refill.mul_f64(1.0 - b.tokens))
    }

    fn fail(&self, peer: Peer, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_PEERS {
            buckets.retain(|_, b| self.refilled(*b, now).tokens < self.burst);
        }
        let b = buckets.get(&peer).copied().unwrap_or(Bucket {
            tokens: self.burst,
            at: now,
        });
        let mut b = self.refilled(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
        buckets.insert(peer, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_prefixed() {
        let a = random_key().unwrap();
        let b = random_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + KEY_RANDOM_CHARS);
        assert!(a.starts_with("hf_"));
        assert!(a[3..].bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
    }

    #[test]
    fn digests_compare_equal_only_when_equal() {
        let d = digest("hf_x");
        assert!(same(&d, &digest("hf_x")));
        let mut other = d;
        other[31] ^= 1;
        assert!(!same(&d, &other));
    }

    #[test]
    fn a_peer_is_limited_after_its_burst_and_recovers() {
        let l = Limiter::new(3.0, Duration::from_secs(2));
        let p = Peer::ip("10.0.0.1".parse().unwrap());
        let q = Peer::ip("10.0.0.2".parse().unwrap());
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.blocked(p, t), None);
            l.fail(p, t);
        }
        let wait = l.blocked(p, t).expect("limited after the burst");
        assert_eq!(wait, Duration::from_secs(2));
        assert_eq!(l.blocked(q, t), None, "another peer pays for nothing");
        assert_eq!(l.blocked(p, t + Duration::from_secs(2)), None);
        // IPv4 through an IPv6 socket is the same peer.
        assert_eq!(Peer::ip("::ffff:10.0.0.1".parse().unwrap()), p);
    }

    #[test]
    fn minting_stores_only_a_digest_and_names_are_unique_while_live() {
        let store = SqliteStore::open_in_memory().unwrap();
        let k = mint(&store, "ci", &[Scope::Read]).unwrap().unwrap();
        assert_eq!(k.record.prefix, &k.key[..PREFIX_LEN]);
        assert_eq!(k.record.hash, digest(&k.key));
        assert_eq!(k.record.scopes, vec!["machines:read".to_string()]);
        let stored = store.keys().unwrap();
        assert_eq!(stored, vec![k.record.clone()]);
        assert!(mint(&store, "ci", &[]).unwrap().is_none());
        let all = mint(&store, "admin", &[]).unwrap().unwrap();
        assert_eq!(all.record.scopes, vec!["machines:read", "machines:write"]);
        assert!(mint(&store, "bad name", &[]).is_err());
        assert!("machines:admin".parse::<Scope>().is_err());
    }
}
