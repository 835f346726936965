//! The first README command, as a new user runs it: `./scripts/dev.sh run` in a fresh copy of
//! the checkout (no `.aerugo/`, a database of its own), a push and a pull with skopeo using the
//! credentials it prints, then Ctrl-C — after which none of the processes it started may remain.
//!
//! The copy holds the files git tracks or would track (the working tree's versions), as a clone
//! of what is being committed would. It builds with the dev profile, whose dependencies the test
//! build already compiled; `dev.sh test` runs this binary alone, after the other tests.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aerugo_e2e::*;

/// Copies the files git tracks or would track (not ignored) from `root` into `dest`.
fn fresh_copy(root: &Path, dest: &Path) {
    let list = run(Command::new("git").arg("-C").arg(root).args([
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
    ]));
    for name in list.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).unwrap_or_else(|e| panic!("file name: {e}"));
        let from = root.join(name);
        if !from.is_file() {
            continue; // deleted in the working tree
        }
        let to = dest.join(name);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
        }
        // `copy` keeps the mode: scripts stay executable.
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{} -> {}: {e}", from.display(), to.display()));
    }
    assert!(!dest.join(".aerugo").exists(), "a fresh copy has no state");
}

/// The process group ids of every live process.
fn process_groups() -> Vec<(u32, i64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid pgrp …`: comm may hold spaces, so split after its ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let pgrp: i64 = fields.nth(1)?.parse().ok()?;
            (state != "Z").then_some((pid, pgrp))
        })
        .collect()
}

/// `dev.sh run` in its own process group, its output collected line by line (and echoed).
struct DevRun {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl DevRun {
    fn start(dir: &Path, env: &[(&str, String)]) -> DevRun {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new("bash");
        cmd.arg("scripts/dev.sh").arg("run").current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped());
        cmd.stderr(Stdio::piped()).process_group(0);
        // Nothing of the test's own settings leaks into the user's command.
        for (name, _) in std::env::vars() {
            if name.starts_with("AERUGO_") && name != "AERUGO_TEST_DATABASE_URL" {
                cmd.env_remove(name);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn dev.sh run: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let stderr = child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        for stream in [stdout, stderr].into_iter().flatten() {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("dev.sh run | {line}");
                    output.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
                }
            });
        }
        DevRun { child, output }
    }

    fn pgid(&self) -> i64 {
        i64::from(self.child.id())
    }

    /// The first output line containing `needle`, waiting for it up to `timeout`.
    fn line_with(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .output
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dev.sh run exited ({status}) before printing {needle:?}");
            }
            assert!(Instant::now() < deadline, "dev.sh run printed no {needle:?} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for DevRun {
    fn drop(&mut self) {
        // A failed test still leaves nothing running.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.pgid())]).status();
        let _ = self.child.wait();
    }
}

#[test]
fn dev_sh_run_from_a_fresh_clone_serves_pushes_and_stops_cleanly_on_ctrl_c() {
    let work = tempfile::tempdir().expect("tempdir");
    let checkout = work.path().join("aerugo");
    fresh_copy(&repo_root(), &checkout);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let database = format!("aerugo_t_front_door_{}_{nanos}", std::process::id());
    let host = format!("127.0.0.1:{}", free_port());
    let env = [
        ("AERUGO_LISTEN", host.clone()),
        ("AERUGO_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port())),
        ("AERUGO_DEV_DATABASE", database.clone()),
        ("AERUGO_BUILD_PROFILE", "dev".to_owned()),
    ];
    let mut dev = DevRun::start(&checkout, &env);

    // The credentials it prints, then /v2/ asking for them.
    let line = dev.line_with("site administrator: admin / ", Duration::from_secs(900));
    let password = line
        .split("admin / ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no password in {line:?}"))
        .to_owned();
    let saved = std::fs::read_to_string(checkout.join(".aerugo/admin-password")).expect("the password file");
    assert_eq!(saved.trim(), password);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_status(&host, "GET", "/v2/") != Some(401) {
        assert!(Instant::now() < deadline, "/v2/ on {host} never answered 401");
        if let Ok(Some(status)) = dev.child.try_wait() {
            panic!("dev.sh run exited ({status}) before serving");
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // Log in as the printed line says, push, pull back by digest.
    let auth_file = work.path().join("auth.json");
    let skopeo = |args: &[&str]| run(Command::new("skopeo").env("REGISTRY_AUTH_FILE", &auth_file).args(args));
    skopeo(&["login", "--tls-verify=false", "-u", "admin", "-p", &password, &host]);
    let src = work.path().join("src");
    let digest = oci_layout(&src, "linux/amd64", 150_000, 7);
    let image = format!("{host}/library/front-door");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", src.display()),
        &format!("docker://{image}:v1"),
    ]);
    let pulled = work.path().join("pulled");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{image}@{digest}"),
        &format!("oci:{}:x", pulled.display()),
    ]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pulled.join("index.json")).expect("index.json")).expect("json");
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    // A wrong password is refused: authentication is on.
    let denied = Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", work.path().join("other.json"))
        .args(["login", "--tls-verify=false", "-u", "admin", "-p", "not-the-password", &host])
        .output()
        .expect("skopeo");
    assert!(!denied.status.success());

    // Ctrl-C (to the script, as the hardest case: its children do not get the signal) stops
    // everything it started.
    let pgid = dev.pgid();
    assert!(process_groups().iter().filter(|(_, g)| *g == pgid).count() >= 2, "dev.sh and the registry run");
    run(Command::new("kill").args(["-INT", &dev.child.id().to_string()]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = dev.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "dev.sh run did not exit within 30 s of SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130), "dev.sh run exits as interrupted");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = process_groups().into_iter().filter(|(_, g)| *g == pgid).map(|(p, _)| p).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes of dev.sh run still alive after it exited: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_status(&host, "GET", "/v2/"), None, "nothing serves on {host} any more");

    run(Command::new("psql").args([
        "-q",
        &aerugo_db::testing::admin_url(),
        "-c",
        &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
    ]));
}
