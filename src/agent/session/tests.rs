//! A session's input against a peer that does not read.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::agent::protocol::{Decoder, Frame, DATA_CHUNK};

// Paused time: the runtime jumps to the next timer whenever everything
// waits, so any deadline on the send would fire at once; none must.
#[tokio::test(start_paused = true)]
async fn stdin_waits_for_a_command_that_does_not_read_and_never_cuts_a_frame() {
    let (host, mut agent) = tokio::io::duplex(4096);
    let session = super::open(
        host,
        Decoder::new(),
        1,
        false,
        Some(Instant::now() + Duration::from_secs(24 * 3600)),
    );
    let (mut input, output) = session.split();
    let data: Vec<u8> = (0..3 * DATA_CHUNK).map(|i| (i % 251) as u8).collect();
    let expected: Vec<Frame> = data
        .chunks(DATA_CHUNK)
        .map(|c| Frame::Stdin(c.to_vec()))
        .collect();
    let send = tokio::spawn(async move { input.send_stdin(&data).await });
    // The agent reads nothing for a minute (its stdin queue is full).
    tokio::time::sleep(Duration::from_secs(60)).await;
    drop(output);
    let reading = tokio::spawn(async move {
        let mut wire = Vec::new();
        agent.read_to_end(&mut wire).await.map(|_| wire)
    });
    let sent = send.await.expect("send task");
    assert!(sent.is_ok(), "the send gave up: {sent:?}");
    let wire = reading.await.expect("read task").expect("read");
    let mut d = Decoder::new();
    d.feed(&wire);
    let mut frames = Vec::new();
    while let Some(f) = d.next_frame().expect("whole frames") {
        frames.push(f);
    }
    d.finish().expect("no frame cut short");
    assert!(
        frames == expected,
        "{} frames arrived, not 3 whole ones",
        frames.len()
    );
}
