//! Frames to bytes and back: the encoder, and an incremental decoder that is
//! fed whatever the socket returned and hands out whole frames.
//!
//! The decoder trusts nothing: a length over the limit, an unknown type or a
//! payload that does not parse ends the stream with an error, and it never
//! allocates on the strength of a length the peer announced (bytes are
//! buffered only as they arrive, and a frame is refused as soon as its
//! header shows it is too large).

use serde::Serialize;

use super::{Control, Frame, Hello, RemoteError, Request, Response, MAX_FRAME};

/// Bytes before a frame's type: its length, big-endian.
const LEN_BYTES: usize = 4;

/// The type byte of each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    Hello = 0x01,
    Request = 0x02,
    Response = 0x03,
    Error = 0x04,
    Control = 0x05,
    Stdin = 0x10,
    Stdout = 0x11,
    Stderr = 0x12,
    Data = 0x13,
    End = 0x14,
}

impl FrameType {
    fn from_byte(b: u8) -> Option<FrameType> {
        Some(match b {
            0x01 => FrameType::Hello,
            0x02 => FrameType::Request,
            0x03 => FrameType::Response,
            0x04 => FrameType::Error,
            0x05 => FrameType::Control,
            0x10 => FrameType::Stdin,
            0x11 => FrameType::Stdout,
            0x12 => FrameType::Stderr,
            0x13 => FrameType::Data,
            0x14 => FrameType::End,
            _ => return None,
        })
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("a {frame:?} frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        frame: FrameType,
        len: usize,
        max: usize,
    },
    #[error("cannot encode a {frame:?} message as JSON")]
    Json {
        frame: FrameType,
        #[source]
        source: serde_json::Error,
    },
}

/// Why the byte stream is not a valid sequence of frames. The stream cannot
/// be resynchronised after any of these: the connection must end.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame with length 0 (a frame has at least its type byte)")]
    Empty,
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    #[error("malformed {frame:?} payload")]
    BadPayload {
        frame: FrameType,
        #[source]
        source: serde_json::Error,
    },
    #[error("End frame with a {0}-byte payload (it has none)")]
    EndWithPayload(usize),
    #[error("stream ended inside a frame ({0} bytes of it received)")]
    Truncated(usize),
    #[error("the stream already failed to decode")]
    Poisoned,
}

/// Appends `frame` to `out`; on error `out` is left as it was.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let frame_type = frame.frame_type();
    let start = out.len();
    out.extend_from_slice(&[0; LEN_BYTES]);
    out.push(frame_type as u8);
    let written = match frame {
        Frame::Hello(m) => json(m, frame_type, out),
        Frame::Request(m) => json(m, frame_type, out),
        Frame::Response(m) => json(m, frame_type, out),
        Frame::Error(m) => json(m, frame_type, out),
        Frame::Control(m) => json(m, frame_type, out),
        Frame::Stdin(d) | Frame::Stdout(d) | Frame::Stderr(d) | Frame::Data(d) => {
            out.extend_from_slice(d);
            Ok(())
        }
        Frame::End => Ok(()),
    };
    let len = out.len() - start - LEN_BYTES;
    let checked = written.and(if len > MAX_FRAME {
        Err(EncodeError::TooLarge {
            frame: frame_type,
            len,
            max: MAX_FRAME,
        })
    } else {
        Ok(())
    });
    match checked {
        Ok(()) => {
            // Cannot truncate: len <= MAX_FRAME, far below u32::MAX.
            let len = len as u32;
            out[start..start + LEN_BYTES].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// `frame` as a fresh buffer.
pub fn encode_to_vec(frame: &Frame) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode(frame, &mut out)?;
    Ok(out)
}

fn json<T: Serialize>(message: &T, frame: FrameType, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    serde_json::to_writer(&mut *out, message).map_err(|source| EncodeError::Json { frame, source })
}

/// Incremental decoder: [`feed`](Decoder::feed) it bytes as they arrive,
/// then take frames with [`next_frame`](Decoder::next_frame) until it says
/// `None` (more bytes needed).
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` before this were already decoded.
    start: usize,
    max_frame: usize,
    poisoned: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder enforcing [`MAX_FRAME`].
    pub fn new() -> Decoder {
        Decoder::with_max_frame(MAX_FRAME)
    }

    /// A decoder enforcing a smaller (or larger) frame limit.
    pub fn with_max_frame(max_frame: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            start: 0,
            max_frame,
            poisoned: false,
        }
    }

    /// Adds received bytes. Callers feed what one read returned and drain
    /// frames before reading again, so the buffer holds at most one partial
    /// frame plus one read.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or the
    /// reason the stream is broken (after which every call fails).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if self.poisoned {
            return Err(DecodeError::Poisoned);
        }
        let result = self.decode_one();
        if result.is_err() {
            self.poisoned = true;
            self.buf = Vec::new();
            self.start = 0;
        }
        result
    }

    /// Call at end of stream: fails if a frame was cut off.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.poisoned {
            return Err(DecodeError::Poisoned);
        }
        match self.buffered() {
            0 => Ok(()),
            n => Err(DecodeError::Truncated(n)),
        }
    }

    fn decode_one(&mut self) -> Result<Option<Frame>, DecodeError> {
        let pending = &self.buf[self.start..];
        let Some(header) = pending.first_chunk::<LEN_BYTES>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len == 0 {
            return Err(DecodeError::Empty);
        }
        if len > self.max_frame {
            return Err(DecodeError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        let type_byte = pending[LEN_BYTES..].first().copied();
        if let Some(b) = type_byte {
            // Known before the payload arrives: fail early on garbage.
            FrameType::from_byte(b).ok_or(DecodeError::UnknownType(b))?;
        }
        if pending.len() < LEN_BYTES + len {
            return Ok(None);
        }
        let type_byte = pending[LEN_BYTES];
        let payload = &pending[LEN_BYTES + 1..LEN_BYTES + len];
        let frame = parse(type_byte, payload)?;
        self.start += LEN_BYTES + len;
        Ok(Some(frame))
    }
}

fn parse(type_byte: u8, payload: &[u8]) -> Result<Frame, DecodeError> {
    let frame_type = FrameType::from_byte(type_byte).ok_or(DecodeError::UnknownType(type_byte))?;
    let bad = |source| DecodeError::BadPayload {
        frame: frame_type,
        source,
    };
    Ok(match frame_type {
        FrameType::Hello => Frame::Hello(serde_json::from_slice::<Hello>(payload).map_err(bad)?),
        FrameType::Request => {
            Frame::Request(serde_json::from_slice::<Request>(payload).map_err(bad)?)
        }
        FrameType::Response => {
            Frame::Response(serde_json::from_slice::<Response>(payload).map_err(bad)?)
        }
        FrameType::Error => {
            Frame::Error(serde_json::from_slice::<RemoteError>(payload).map_err(bad)?)
        }
        FrameType::Control => {
            Frame::Control(serde_json::from_slice::<Control>(payload).map_err(bad)?)
        }
        FrameType::Stdin => Frame::Stdin(payload.to_vec()),
        FrameType::Stdout => Frame::Stdout(payload.to_vec()),
        FrameType::Stderr => Frame::Stderr(payload.to_vec()),
        FrameType::Data => Frame::Data(payload.to_vec()),
        FrameType::End => {
            if !payload.is_empty() {
                return Err(DecodeError::EndWithPayload(payload.len()));
            }
            Frame::End
        }
    })
}
