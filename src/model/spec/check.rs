//! Field checks shared by the container and VM specs.

use std::path::{Component, Path};

use crate::error::{Error, Result};

/// Host and guest paths must be absolute and must not climb with `..`: a
/// spec is never allowed to name a place relative to wherever the daemon runs.
pub(super) fn path(field: &str, path: &Path) -> Result<()> {
    let s = path.as_os_str();
    if s.is_empty() || !path.is_absolute() {
        return Err(Error::InvalidConfig(format!(
            "{field} must be an absolute path"
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::InvalidConfig(format!(
            "{field} must not contain '..'"
        )));
    }
    if s.as_encoded_bytes().contains(&0) {
        return Err(Error::InvalidConfig(format!(
            "{field} must not contain NUL"
        )));
    }
    Ok(())
}

/// A word passed on to a runtime: no NUL, which would cut it short there.
pub(super) fn no_nul(field: &str, values: &[String]) -> Result<()> {
    if values.iter().any(|a| a.contains('\0')) {
        return Err(Error::InvalidConfig(format!(
            "{field} must not contain NUL bytes"
        )));
    }
    Ok(())
}

/// An identifier a runtime uses as a name (a disk id, a TAP device).
pub(super) fn ident(field: &str, s: &str, max: usize) -> Result<()> {
    if s.is_empty()
        || s.len() > max
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Error::InvalidConfig(format!(
            "{field} must be 1..={max} of letters, digits, '-', '_' and '.', got {s:?}"
        )));
    }
    Ok(())
}
