//! Test support shared by the workspace's tests: what a test does when a service or tool it
//! needs (Garage, Redis, moto, kubectl, PostgreSQL's server binaries) is missing.
//!
//! `./scripts/dev.sh test` installs and starts all of them, so under CI (`CI` set, as `.ci/run`
//! runs) a missing one is a broken install step: the test fails. Elsewhere (a plain
//! `cargo test`) the test is skipped, and the skip is counted: `dev.sh test` prints the count.
//! Depends on nothing; never used by the binaries.

use std::io::Write as _;
use std::panic::Location;

/// Whether this run is CI's (`CI` set to anything but empty, `0` or `false`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// Reports that the calling test cannot run because `what` is missing; the caller then
/// returns. Under CI this panics instead. Elsewhere the skip is printed and appended to the
/// file `AERUGO_SKIP_LOG` names, one line per skip.
#[track_caller]
pub fn skip(what: &str) {
    let at = Location::caller();
    assert!(
        !under_ci(),
        "{what} is missing at {at}: under CI ./scripts/dev.sh test installs and starts it, so its absence is a broken install step"
    );
    eprintln!("SKIPPED at {at}: {what} is missing (./scripts/dev.sh test provides it)");
    if let Some(path) = std::env::var_os("AERUGO_SKIP_LOG") {
        let line = format!("{at}: {what}\n");
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            eprintln!("could not record the skip in {}: {e}", std::path::Path::new(&path).display());
        }
    }
}

/// The environment variable `name` that `dev.sh test` sets for a service, or `None` after
/// [`skip`] (which panics under CI).
#[track_caller]
pub fn service_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            skip(&format!("{name} (a service of ./scripts/dev.sh test)"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_variable_is_returned_without_a_skip() {
        // PATH is set in every environment tests run in.
        assert!(service_env("PATH").is_some());
    }
}
