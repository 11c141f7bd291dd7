//! Property tests of the codec: arbitrary bytes never panic it nor make it
//! buffer more than it was given, and every frame type survives a round trip
//! however the bytes are split.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..12).prop_map(|cs| cs.into_iter().collect())
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn window() -> impl Strategy<Value = WindowSize> {
    (any::<u16>(), any::<u16>()).prop_map(|(rows, cols)| WindowSize { rows, cols })
}

fn exec_request() -> impl Strategy<Value = ExecRequest> {
    (
        vec(text(), 0..4),
        vec((text(), text()), 0..3),
        proptest::option::of(text()),
        proptest::option::of(text()),
        (any::<u64>(), 0u32..1_000_000_000),
    )
        .prop_map(
            |(argv, env, working_dir, user, (secs, nanos))| ExecRequest {
                argv,
                env: env.into_iter().collect::<BTreeMap<_, _>>(),
                working_dir,
                user,
                timeout: Duration::new(secs, nanos),
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        Just(Request::PowerOff),
        exec_request().prop_map(Request::Exec),
        (exec_request(), proptest::option::of(window())).prop_map(|(exec, pty)| {
            Request::ExecStream(StreamRequest {
                exec,
                pty,
                no_timeout: false,
            })
        }),
        (text(), any::<u32>()).prop_map(|(path, mode)| Request::PutFile { path, mode }),
        text().prop_map(|path| Request::GetFile { path }),
        (any::<u32>(), any::<i32>()).prop_map(|(pid, signal)| Request::Signal { pid, signal }),
    ]
}

fn exit_status() -> impl Strategy<Value = ExitStatus> {
    prop_oneof![
        any::<i32>().prop_map(ExitStatus::Code),
        any::<i32>().prop_map(ExitStatus::Signal),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        any::<bool>().prop_map(|pid1| Response::Pong { pid1 }),
        any::<u32>().prop_map(|pid| Response::Started { pid }),
        (exit_status(), any::<[bool; 3]>()).prop_map(|(status, [t, o, e])| {
            Response::Exit(ExitInfo {
                status,
                timed_out: t,
                stdout_truncated: o,
                stderr_truncated: e,
            })
        }),
        Just(Response::Ready),
        any::<u64>().prop_map(|bytes| Response::Written { bytes }),
        (any::<u64>(), any::<u32>()).prop_map(|(size, mode)| Response::File { size, mode }),
        Just(Response::PoweringOff),
        Just(Response::Signalled),
    ]
}

fn error_kind() -> impl Strategy<Value = ErrorKind> {
    prop_oneof![
        Just(ErrorKind::NotFound),
        Just(ErrorKind::PermissionDenied),
        Just(ErrorKind::IsADirectory),
        Just(ErrorKind::NotADirectory),
        Just(ErrorKind::InvalidArgument),
        Just(ErrorKind::Unsupported),
        Just(ErrorKind::Protocol),
        Just(ErrorKind::VersionMismatch),
        Just(ErrorKind::Io),
        Just(ErrorKind::Other),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (text(), any::<u16>(), any::<u16>(), text()).prop_map(
            |(protocol, major, minor, software)| {
                Frame::Hello(Hello {
                    protocol,
                    version: Version { major, minor },
                    software,
                })
            }
        ),
        request().prop_map(Frame::Request),
        response().prop_map(Frame::Response),
        (error_kind(), text(), proptest::option::of(any::<i32>())).prop_map(
            |(kind, message, errno)| Frame::Error(RemoteError {
                kind,
                message,
                errno
            })
        ),
        prop_oneof![
            any::<i32>().prop_map(|signal| Control::Signal { signal }),
            window().prop_map(Control::Resize),
            Just(Control::CloseStdin),
        ]
        .prop_map(Frame::Control),
        bytes(3000).prop_map(Frame::Stdin),
        bytes(3000).prop_map(Frame::Stdout),
        bytes(3000).prop_map(Frame::Stderr),
        bytes(3000).prop_map(Frame::Data),
        Just(Frame::End),
    ]
}

/// Feeds `wire` to `decoder` in pieces of the given sizes (cycled), taking
/// frames after each piece as a reader would.
fn decode_in_pieces(
    decoder: &mut Decoder,
    wire: &[u8],
    pieces: &[usize],
) -> Result<Vec<Frame>, DecodeError> {
    let mut frames = Vec::new();
    let mut rest = wire;
    let mut sizes = pieces.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        decoder.feed(&rest[..n]);
        rest = &rest[n..];
        while let Some(f) = decoder.next_frame()? {
            frames.push(f);
        }
    }
    Ok(frames)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_frame_round_trips_however_split(
        frames in vec(frame(), 1..6),
        pieces in vec(1usize..5000, 1..8),
    ) {
        let mut wire = Vec::new();
        for f in &frames {
            encode(f, &mut wire).expect("encodable");
        }
        let mut decoder = Decoder::new();
        let decoded = decode_in_pieces(&mut decoder, &wire, &pieces).expect("decodes");
        prop_assert_eq!(decoded, frames);
        prop_assert_eq!(decoder.buffered(), 0);
        prop_assert!(decoder.finish().is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overbuffer(
        wire in bytes(20_000),
        pieces in vec(1usize..2000, 1..8),
        max_frame in 1usize..4096,
    ) {
        let mut decoder = Decoder::with_max_frame(max_frame);
        let mut rest = &wire[..];
        let mut sizes = pieces.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
            decoder.feed(&rest[..n]);
            rest = &rest[n..];
            // What stays buffered is never more than one partial frame (at
            // most its header and max_frame bytes) plus the latest piece.
            loop {
                match decoder.next_frame() {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(_) => {
                        prop_assert!(matches!(decoder.next_frame(), Err(DecodeError::Poisoned)));
                        prop_assert_eq!(decoder.buffered(), 0);
                        return Ok(());
                    }
                }
            }
            prop_assert!(decoder.buffered() <= 4 + max_frame + n);
        }
    }

    #[test]
    fn a_valid_prefix_then_garbage_yields_the_prefix_then_an_error_or_a_wait(
        first in frame(),
        garbage in bytes(64),
    ) {
        let mut wire = encode_to_vec(&first).expect("encodable");
        wire.extend_from_slice(&garbage);
        let mut decoder = Decoder::new();
        decoder.feed(&wire);
        prop_assert_eq!(decoder.next_frame().expect("first frame"), Some(first));
        // The garbage is either an error or an incomplete frame, never a panic.
        let _ = decoder.next_frame();
    }
}

#[test]
fn an_announced_huge_frame_is_refused_from_its_header_alone() {
    let mut decoder = Decoder::new();
    decoder.feed(&u32::MAX.to_be_bytes());
    match decoder.next_frame() {
        Err(DecodeError::TooLarge { len, max }) => {
            assert_eq!(len, u32::MAX as usize);
            assert_eq!(max, MAX_FRAME);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn unknown_types_and_empty_frames_are_refused_before_their_payload() {
    let mut decoder = Decoder::new();
    decoder.feed(&[0, 0, 0, 100, 0x7f]);
    assert!(matches!(
        decoder.next_frame(),
        Err(DecodeError::UnknownType(0x7f))
    ));

    let mut decoder = Decoder::new();
    decoder.feed(&[0, 0, 0, 0]);
    assert!(matches!(decoder.next_frame(), Err(DecodeError::Empty)));
}

#[test]
fn a_cut_off_frame_is_reported_at_end_of_stream() {
    let wire = encode_to_vec(&Frame::Stdout(b"hello".to_vec())).expect("encodable");
    let mut decoder = Decoder::new();
    decoder.feed(&wire[..wire.len() - 1]);
    assert!(decoder.next_frame().expect("no error yet").is_none());
    assert!(matches!(decoder.finish(), Err(DecodeError::Truncated(9))));
}

#[test]
fn oversized_messages_are_not_encoded() {
    let big = Frame::Data(vec![0; MAX_FRAME]);
    let mut out = vec![1, 2, 3];
    assert!(matches!(
        encode(&big, &mut out),
        Err(EncodeError::TooLarge { .. })
    ));
    assert_eq!(
        out,
        [1, 2, 3],
        "a failed encode leaves the buffer as it was"
    );
    // One byte less fits: the limit counts the type byte.
    assert!(encode(&Frame::Data(vec![0; MAX_FRAME - 1]), &mut out).is_ok());
}

#[test]
fn the_wire_format_is_as_documented() {
    let wire = encode_to_vec(&Frame::Request(Request::Ping)).expect("encodable");
    assert_eq!(&wire[..5], &[0, 0, 0, 16, 0x02]);
    assert_eq!(&wire[5..], br#"{"type":"ping"}"#);

    let exec = Request::Exec(ExecRequest::new(["true"]));
    let json = serde_json::to_string(&exec).expect("json");
    assert_eq!(
        json,
        r#"{"type":"exec","argv":["true"],"env":{},"working_dir":null,"user":null,"timeout":{"secs":30,"nanos":0}}"#
    );
    let exit = Response::Exit(ExitInfo {
        status: ExitStatus::Signal(9),
        timed_out: true,
        stdout_truncated: false,
        stderr_truncated: false,
    });
    assert_eq!(
        serde_json::to_string(&exit).expect("json"),
        r#"{"type":"exit","status":{"signal":9},"timed_out":true,"stdout_truncated":false,"stderr_truncated":false}"#
    );
}

#[test]
fn an_unknown_error_kind_from_a_newer_peer_is_kept_as_other() {
    let e: RemoteError =
        serde_json::from_str(r#"{"kind":"quota_exceeded","message":"m"}"#).expect("parses");
    assert_eq!(e.kind, ErrorKind::Other);
    assert_eq!(e.errno, None);
}
