//! One error type for the whole crate. Each variant maps to exactly one errno
//! (what the filesystem returns) and one HTTP status (what REST returns), so
//! every front end reports the same failure the same way.

use crate::core::Status;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("invalid machine name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("machine name is longer than {max} bytes")]
    NameTooLong { max: usize },
    #[error("no machine named {0:?}")]
    NotFound(String),
    #[error("a machine named {0:?} already exists")]
    AlreadyExists(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("config is incomplete: {0}")]
    IncompleteConfig(String),
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    #[error("cannot {action} a machine that is {status}")]
    InvalidState {
        action: &'static str,
        status: Status,
    },
    #[error("machine is already {0}")]
    AlreadyInState(Status),
    #[error("{0}")]
    Busy(String),
    #[error("write too large: at most {limit} bytes are accepted")]
    TooLarge { limit: usize },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{runtime} does not support {operation}")]
    Unsupported { runtime: String, operation: String },
    #[error("image {image:?} is not available: {reason}")]
    ImageNotFound { image: String, reason: String },
    #[error("{runtime} is unavailable: {reason}")]
    RuntimeUnavailable { runtime: String, reason: String },
    #[error("{0}")]
    Runtime(String),
    #[error("state store: {0}")]
    Store(String),
}

impl Error {
    /// The errno a filesystem call fails with.
    pub fn errno(&self) -> i32 {
        match self {
            Error::InvalidName { .. } => libc::EINVAL,
            Error::NameTooLong { .. } => libc::ENAMETOOLONG,
            Error::NotFound(_) => libc::ENOENT,
            Error::AlreadyExists(_) => libc::EEXIST,
            Error::InvalidConfig(_) => libc::EINVAL,
            Error::IncompleteConfig(_) => libc::EINVAL,
            Error::InvalidCommand(_) => libc::EINVAL,
            Error::InvalidState { .. } => libc::EINVAL,
            Error::AlreadyInState(_) => libc::EALREADY,
            Error::Busy(_) => libc::EBUSY,
            Error::TooLarge { .. } => libc::EFBIG,
            Error::Timeout(_) => libc::ETIMEDOUT,
            Error::Unsupported { .. } => libc::EOPNOTSUPP,
            Error::ImageNotFound { .. } => libc::ENOENT,
            Error::RuntimeUnavailable { .. } => libc::ECONNREFUSED,
            Error::Runtime(_) => libc::EIO,
            Error::Store(_) => libc::EIO,
        }
    }

    /// The HTTP status a REST call fails with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::InvalidName { .. } | Error::NameTooLong { .. } => 400,
            Error::NotFound(_) => 404,
            Error::AlreadyExists(_) => 409,
            Error::InvalidConfig(_) | Error::InvalidCommand(_) => 400,
            Error::IncompleteConfig(_) => 422,
            Error::InvalidState { .. } | Error::AlreadyInState(_) | Error::Busy(_) => 409,
            Error::TooLarge { .. } => 413,
            Error::Timeout(_) => 504,
            Error::Unsupported { .. } => 501,
            Error::ImageNotFound { .. } => 424,
            Error::RuntimeUnavailable { .. } => 503,
            Error::Runtime(_) => 502,
            Error::Store(_) => 500,
        }
    }

    /// A stable machine-readable code for JSON bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidName { .. } => "invalid_name",
            Error::NameTooLong { .. } => "name_too_long",
            Error::NotFound(_) => "not_found",
            Error::AlreadyExists(_) => "already_exists",
            Error::InvalidConfig(_) => "invalid_config",
            Error::IncompleteConfig(_) => "incomplete_config",
            Error::InvalidCommand(_) => "invalid_command",
            Error::InvalidState { .. } => "invalid_state",
            Error::AlreadyInState(_) => "already_in_state",
            Error::Busy(_) => "busy",
            Error::TooLarge { .. } => "too_large",
            Error::Timeout(_) => "timeout",
            Error::Unsupported { .. } => "unsupported",
            Error::ImageNotFound { .. } => "image_not_found",
            Error::RuntimeUnavailable { .. } => "runtime_unavailable",
            Error::Runtime(_) => "runtime_error",
            Error::Store(_) => "store_error",
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store(e.to_string())
    }
}
