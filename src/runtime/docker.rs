//! Docker runtime (work in progress)
