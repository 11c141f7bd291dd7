//! Making sure a container's image is present: pulling it when it is not,
//! reporting progress to the machine's log, giving up on a pull that has
//! stalled, and saying why a pull failed in terms a user can act on.

use std::time::Duration;

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use super::connection::{docker_error, status_of};
use crate::error::{Error, Result};
use crate::runtime::LogSink;

pub(super) async fn ensure_image(
    docker: &Docker,
    image: &str,
    stall: Duration,
    notes: &dyn LogSink,
) -> Result<()> {
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(e) if status_of(&e) == Some(404) => {}
        Err(e) => return Err(docker_error(e, None)),
    }
    notes.note(&format!("image {image} is not present locally; pulling it"));
    let (repo, tag) = split_image_reference(image);
    let mut options = CreateImageOptionsBuilder::default().from_image(repo);
    // Without a tag the engine would pull every tag of the repository.
    if let Some(tag) = tag {
        options = options.tag(tag);
    }
    let mut pull = docker.create_image(Some(options.build()), None, None);
    let mut last = String::new();
    loop {
        // A registry that never answers would hold the start forever: each
        // step of the pull must come within `stall`. Dropping the stream
        // makes the engine abandon the pull.
        let item = match tokio::time::timeout(stall, pull.next()).await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(_) => {
                return Err(Error::Timeout(format!(
                    "pulling {image} made no progress for {}s",
                    stall.as_secs_f64()
                )))
            }
        };
        let info = item.map_err(|e| classify(image, &docker_error(e, Some(image))))?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            return Err(classify(image, &Error::Runtime(detail)));
        }
        // Byte-count ticks would flood the log; keep the step changes.
        let ticking = info
            .progress_detail
            .as_ref()
            .is_some_and(|p| p.current.is_some());
        let Some(status) = info.status.filter(|_| !ticking) else {
            continue;
        };
        let line = match info.id {
            Some(id) if !id.is_empty() => format!("{id}: {status}"),
            _ => status,
        };
        if line != last {
            notes.note(&line);
            last = line;
        }
    }
    notes.note(&format!("pulled image {image}"));
    Ok(())
}

/// Says why a pull failed in the error kind a user can act on: the image is
/// not there (ENOENT), the registry cannot be reached (EHOSTUNREACH), it
/// wants credentials (EACCES), or the disk is full (ENOSPC). The engine
/// reports all of them as text, so the text decides.
pub(super) fn classify(image: &str, err: &Error) -> Error {
    let text = err.report().to_string();
    let lower = text.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if matches!(err.root(), Error::RuntimeUnavailable { .. }) {
        return err.clone();
    }
    let detail = format!("pulling {image}: {text}");
    if has(&["no space left on device"]) {
        Error::NoSpace(detail)
    } else if has(&["repository does not exist"]) {
        // Docker Hub's answer for an image that does not exist reads like an
        // access problem ("pull access denied for x, repository does not
        // exist or may require 'docker login'"): a typo is the likelier cause.
        Error::ImageNotFound {
            image: image.to_owned(),
            reason: format!("{text} (or it is private: docker login)"),
        }
    } else if has(&[
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "pull access denied",
        "denied:",
        "requested access to the resource is denied",
    ]) {
        Error::AccessDenied(detail)
    } else if has(&[
        "manifest unknown",
        "not found",
        "does not exist",
        "name unknown",
    ]) {
        Error::ImageNotFound {
            image: image.to_owned(),
            reason: text,
        }
    } else if has(&[
        "no such host",
        "connection refused",
        "dial tcp",
        "i/o timeout",
        "network is unreachable",
        "tls handshake timeout",
        "timeout exceeded",
        "server misbehaving",
        "connection reset",
        "eof",
    ]) {
        Error::Unreachable(detail)
    } else {
        Error::Runtime(detail)
    }
}

/// Splits `repo[:tag]` (a digest reference stays whole). The tag is the
/// part after the last ':' of the last path component, so a registry port
/// (`host:5000/x`) is not mistaken for one.
pub(super) fn split_image_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].rfind(':') {
        Some(i) => (&image[..last + i], Some(&image[last + i + 1..])),
        None => (image, Some("latest")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_at_the_tag() {
        assert_eq!(
            split_image_reference("busybox"),
            ("busybox", Some("latest"))
        );
        assert_eq!(
            split_image_reference("busybox:1.36"),
            ("busybox", Some("1.36"))
        );
        assert_eq!(
            split_image_reference("localhost:5000/x/y"),
            ("localhost:5000/x/y", Some("latest"))
        );
        assert_eq!(
            split_image_reference("localhost:5000/x/y:v2"),
            ("localhost:5000/x/y", Some("v2"))
        );
        assert_eq!(
            split_image_reference("busybox@sha256:abcd"),
            ("busybox@sha256:abcd", None)
        );
    }

    #[test]
    fn pull_failures_are_classified_by_what_a_user_can_do() {
        let kind = |msg: &str| classify("img", &Error::Runtime(msg.into())).errno();
        assert_eq!(
            kind("manifest for img:latest not found: manifest unknown"),
            libc::ENOENT
        );
        assert_eq!(
            kind("Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host"),
            libc::EHOSTUNREACH
        );
        assert_eq!(
            kind("pull access denied for img, repository does not exist or may require 'docker login'"),
            libc::ENOENT
        );
        assert_eq!(
            kind("Head \"http://r/v2/img/manifests/latest\": no basic auth credentials"),
            libc::EACCES
        );
        assert_eq!(
            kind("write /var/lib/docker/tmp/x: no space left on device"),
            libc::ENOSPC
        );
        assert_eq!(kind("something else entirely"), libc::EIO);
        let down = Error::RuntimeUnavailable {
            runtime: "docker".into(),
            reason: "socket missing".into(),
        };
        assert_eq!(classify("img", &down).errno(), libc::ECONNREFUSED);
    }
}
