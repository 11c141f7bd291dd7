//! `GET /events[?machine=][&type=]` and `GET /machines/{id}/events[?type=]`:
//! the fleet's changes as they happen, from the moment of the request (no
//! history), as the filesystem's `events` files tell them. One JSON object
//! a line (`application/x-ndjson`), each [`Event::json`]; or, for a client
//! that accepts `text/event-stream`, Server-Sent Events: `event: TYPE`,
//! `data: JSON` and a blank line per event, and a `: keep-alive` comment
//! after [`KEEP_ALIVE`] without one, so proxies keep the connection.
//!
//! A reader is a core [`Subscription`]: the daemon never waits on it. One
//! that falls [`BACKLOG`](crate::core::BACKLOG) events behind loses the
//! oldest and gets a `dropped` marker in their place, whatever its filter
//! (the lost events may have been of any machine or type). The stream ends
//! when the client goes: the server then drops the body, and with it the
//! subscription, so nothing is left running; for one machine, it ends after
//! that machine's `deleted` too.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::Response;
use tokio::time::Instant;

use super::reply::{streamed, Body};
use crate::core::{Machine, Subscription};
use crate::model::{Event, Happening};

/// The longest a Server-Sent Events stream stays silent.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
const KEEP_ALIVE_COMMENT: &[u8] = b": keep-alive\n\n";
/// Events already waiting are sent together, up to about this much.
const CHUNK: usize = 64 << 10;

/// How events are written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One JSON object a line.
    Lines,
    /// Server-Sent Events.
    Sse,
}

impl Framing {
    /// Server-Sent Events if the client accepts them, else lines.
    pub fn of(accept: Option<&HeaderValue>) -> Framing {
        let sse = accept.and_then(|v| v.to_str().ok()).is_some_and(|v| {
            v.split(',').any(|range| {
                let media = range.split(';').next().unwrap_or_default().trim();
                media.eq_ignore_ascii_case("text/event-stream")
            })
        });
        if sse {
            Framing::Sse
        } else {
            Framing::Lines
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Framing::Lines => "application/x-ndjson",
            Framing::Sse => "text/event-stream",
        }
    }

    fn write(self, e: &Event, out: &mut Vec<u8>) {
        let json = e.json();
        match self {
            Framing::Lines => {
                write_json(&json, out);
                out.push(b'\n');
            }
            Framing::Sse => {
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(e.what.kind().as_bytes());
                // Compact JSON holds no newline: one `data:` line.
                out.extend_from_slice(b"\ndata: ");
                write_json(&json, out);
                out.extend_from_slice(b"\n\n");
            }
        }
    }
}

fn write_json(v: &serde_json::Value, out: &mut Vec<u8>) {
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Which events a reader is sent.
#[derive(Default)]
pub struct Filter {
    /// Only this machine's; the stream ends after its deletion.
    pub machine: Option<Arc<Machine>>,
    /// Only these types; `None` for all.
    pub types: Option<Vec<&'static str>>,
}

impl Filter {
    fn wants(&self, e: &Event) -> bool {
        // The marker stands for events of any machine and type.
        if matches!(e.what, Happening::Dropped(_)) {
            return true;
        }
        let machine = self
            .machine
            .as_ref()
            .is_none_or(|m| e.machine_seq() == Some(m.seq()));
        let kind = self
            .types
            .as_ref()
            .is_none_or(|t| t.contains(&e.what.kind()));
        machine && kind
    }

    /// What follows `e` for this reader.
    fn after(&self, e: &Event) -> After {
        let Some(m) = &self.machine else {
            return After::More;
        };
        match e.what {
            Happening::Deleted { .. } if e.machine_seq() == Some(m.seq()) => After::End,
            // Its deletion may be among what was lost: then what is still
            // waiting is all there is.
            Happening::Dropped(_) if m.is_deleted() => After::Waiting,
            _ => After::More,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    More,
    /// The events already waiting, then the end.
    Waiting,
    End,
}

/// The streamed reply. `sub` is taken before the machine of `filter` is
/// looked up, so that machine's deletion cannot fall between the two.
pub fn reply(sub: Subscription, filter: Filter, framing: Framing) -> Response<Body> {
    respond(sub, filter, framing, KEEP_ALIVE)
}

fn respond(
    sub: Subscription,
    filter: Filter,
    framing: Framing,
    keep_alive: Duration,
) -> Response<Body> {
    let reader = Reader {
        sub,
        filter,
        framing,
        after: After::More,
        keep_alive,
        quiet_until: Instant::now() + keep_alive,
        sent: 0,
    };
    streamed(
        framing.content_type(),
        futures_util::stream::unfold(reader, Reader::next),
    )
}

struct Reader {
    sub: Subscription,
    filter: Filter,
    framing: Framing,
    after: After,
    keep_alive: Duration,
    /// When a Server-Sent Events stream is owed a keep-alive.
    quiet_until: Instant,
    sent: u64,
}

impl Reader {
    /// The next chunk: the next event the filter lets through, and any
    /// others already waiting behind it.
    async fn next(mut self) -> Option<(Bytes, Reader)> {
        let mut out = Vec::new();
        while out.is_empty() {
            if self.after == After::End {
                return None;
            }
            let event = match self.framing {
                Framing::Lines => self.sub.next().await,
                Framing::Sse => {
                    match tokio::time::timeout_at(self.quiet_until, self.sub.next()).await {
                        Ok(e) => e,
                        Err(_) => {
                            self.quiet_until = Instant::now() + self.keep_alive;
                            return Some((Bytes::from_static(KEEP_ALIVE_COMMENT), self));
                        }
                    }
                }
            };
            // `None`: the core is gone, and the daemon with it.
            self.take(&*event?, &mut out);
            while self.after != After::End && out.len() < CHUNK {
                match self.sub.try_next() {
                    Some(e) => self.take(&e, &mut out),
                    None => break,
                }
            }
            if self.after == After::Waiting && !self.sub.is_ready() {
                self.after = After::End;
            }
        }
        self.quiet_until = Instant::now() + self.keep_alive;
        Some((Bytes::from(out), self))
    }

    fn take(&mut self, e: &Event, out: &mut Vec<u8>) {
        if self.filter.wants(e) {
            self.framing.write(e, out);
            self.sent += 1;
        }
        match self.filter.after(e) {
            After::More => {}
            After::Waiting if self.after == After::More => self.after = After::Waiting,
            After::Waiting => {}
            After::End => self.after = After::End,
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let machine = self.filter.machine.as_ref().map(|m| m.name());
        tracing::debug!(
            machine = ?machine.as_ref().map(|n| n.as_str()),
            sent = self.sent,
            "rest: events reader done"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Core;
    use crate::model::{MachineName, MachineSpec, RuntimeKind, Status, Subject};
    use futures_util::StreamExt;
    use http_body_util::BodyExt;

    fn event(seq: u64, what: Happening) -> Event {
        Event {
            at_ms: 0,
            subject: Subject::Machine {
                seq,
                id: format!("id-{seq}"),
                name: MachineName::parse(format!("m{seq}").as_bytes()).unwrap(),
            },
            what,
        }
    }

    #[test]
    fn framing_follows_accept() {
        let of = |v: &'static str| Framing::of(Some(&HeaderValue::from_static(v)));
        assert_eq!(Framing::of(None), Framing::Lines);
        assert_eq!(of("*/*"), Framing::Lines);
        assert_eq!(of("application/x-ndjson"), Framing::Lines);
        assert_eq!(of("text/event-stream"), Framing::Sse);
        assert_eq!(of("text/html, Text/Event-Stream;q=0.9"), Framing::Sse);
    }

    #[test]
    fn events_are_framed_as_lines_or_sse() {
        let e = event(
            1,
            Happening::Status {
                from: Status::Pending,
                to: Status::Starting,
            },
        );
        let json = r#"{"from":"pending","id":"id-1","machine":"m1","time":"1970-01-01T00:00:00.000Z","to":"starting","type":"status"}"#;
        let mut out = Vec::new();
        Framing::Lines.write(&e, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), format!("{json}\n"));
        let mut out = Vec::new();
        Framing::Sse.write(&e, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("event: status\ndata: {json}\n\n")
        );
        // An error's newline cannot break the framing.
        let mut out = Vec::new();
        Framing::Sse.write(&event(1, Happening::Error("a\nb".into())), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 3, "{text}");
        assert!(text.contains(r#""message":"a\nb""#), "{text}");
    }

    #[test]
    fn filters_pass_markers_whatever_they_ask_for() {
        let only = Filter {
            machine: None,
            types: Some(vec!["status", "error"]),
        };
        assert!(only.wants(&event(1, Happening::Error("x".into()))));
        assert!(!only.wants(&event(1, Happening::Created)));
        assert!(only.wants(&Event::dropped(3)));
        assert_eq!(only.after(&event(1, Happening::Created)), After::More);
        let all = Filter::default();
        let gone = event(
            1,
            Happening::Deleted {
                status: Status::Stopped,
                runtime: RuntimeKind::Docker,
            },
        );
        assert!(all.wants(&gone));
        assert_eq!(all.after(&gone), After::More, "a fleet stream never ends");
    }

    /// A Core with no runtime, on a store in memory: enough to create,
    /// fail and delete machines, quickly.
    fn core() -> (Arc<Core>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::SqliteStore::open_in_memory().unwrap());
        let core = Core::open_with(
            dir.path(),
            store,
            Vec::new(),
            crate::core::Settings::default(),
        )
        .unwrap();
        (core, dir)
    }

    async fn body_text(resp: Response<Body>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn one_machines_stream_ends_after_its_deletion() {
        let (core, _dir) = core();
        let other = core.create(b"other", MachineSpec::default()).await.unwrap();
        let sub = core.subscribe();
        let m = core.create(b"web", MachineSpec::default()).await.unwrap();
        let filter = Filter {
            machine: Some(m.clone()),
            types: Some(vec!["deleted", "error"]),
        };
        let resp = reply(sub, filter, Framing::Lines);
        assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        core.report(
            &other,
            crate::error::Error::InvalidCommand("not mine".into()),
        )
        .await;
        core.report(&m, crate::error::Error::InvalidCommand("mine".into()))
            .await;
        core.delete(&m).await.unwrap();
        // Collecting the whole body returns: the stream ended by itself.
        let text = body_text(resp).await;
        let types: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["machine"], "web", "{l}");
                v["type"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(types, ["error", "deleted"], "{text}");
    }

    #[tokio::test]
    async fn a_machine_lost_among_dropped_events_still_ends_the_stream() {
        let (core, _dir) = core();
        let m = core.create(b"web", MachineSpec::default()).await.unwrap();
        let filter = Filter {
            machine: Some(m.clone()),
            types: None,
        };
        let resp = reply(core.subscribe(), filter, Framing::Lines);
        let other = core.create(b"other", MachineSpec::default()).await.unwrap();
        core.delete(&m).await.unwrap();
        // Its deletion is pushed out of the backlog by others' events.
        for i in 0..crate::core::BACKLOG {
            core.report(&other, crate::error::Error::InvalidCommand(format!("{i}")))
                .await;
        }
        let text = body_text(resp).await;
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["type"], "dropped", "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[tokio::test]
    async fn a_quiet_sse_stream_sends_keep_alives() {
        let (core, _dir) = core();
        let every = Duration::from_millis(50);
        let resp = respond(core.subscribe(), Filter::default(), Framing::Sse, every);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body().into_data_stream();
        let began = Instant::now();
        let chunk = body.next().await.unwrap().unwrap();
        assert_eq!(&chunk[..], KEEP_ALIVE_COMMENT);
        assert!(began.elapsed() >= every, "{:?}", began.elapsed());
        core.create(b"web", MachineSpec::default()).await.unwrap();
        let chunk = body.next().await.unwrap().unwrap();
        let text = std::str::from_utf8(&chunk).unwrap();
        assert!(
            text.starts_with("event: created\ndata: {") && text.ends_with("}\n\n"),
            "{text}"
        );
        let began = Instant::now();
        let chunk = body.next().await.unwrap().unwrap();
        assert_eq!(&chunk[..], KEEP_ALIVE_COMMENT);
        assert!(began.elapsed() >= every, "{:?}", began.elapsed());
        // Lines carry no comments: a quiet stream of lines stays quiet.
        let resp = respond(core.subscribe(), Filter::default(), Framing::Lines, every);
        let mut body = resp.into_body().into_data_stream();
        let quiet = tokio::time::timeout(every * 4, body.next()).await;
        assert!(quiet.is_err(), "{quiet:?}");
    }
}
