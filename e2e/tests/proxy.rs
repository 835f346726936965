//! Behind a real reverse proxy (nginx, as an ingress would be): with the proxy's address in
//! `AERUGO_TRUSTED_PROXIES`, limits apply per real client address — a guesser from one address
//! neither locks out a user logging in from another nor spends anyone else's rate budget, and
//! the `X-Forwarded-For` entries a client writes itself are never believed. Without it, every
//! client shares the proxy's address (which is what the setting fixes).
//!
//! Clients take different loopback addresses (127.0.0.2, 127.0.0.3, …: all of 127.0.0.0/8 is
//! this machine) with curl's `--interface`; nginx reaches the data plane from 127.0.0.1.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aerugo_e2e::*;

/// An nginx in front of `upstream`, with state in a directory of its own; stopped on drop.
struct Nginx {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstream: &str) -> Option<Nginx> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| Path::new(p).exists())?;
        let dir = tempfile::tempdir().expect("tempdir");
        let host = format!("127.0.0.1:{}", free_port());
        let d = dir.path().display();
        let config = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen {host};\n    client_max_body_size 0;\n\
                 location / {{\n      proxy_pass http://{upstream};\n      proxy_set_header Host $http_host;\n\
                   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), config).expect("config");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on {host}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Nginx { child, host, _dir: dir })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of `GET path` through the proxy from the loopback address `from`, with Basic
/// `credentials` and, when given, an `X-Forwarded-For` the client writes itself.
fn status(proxy: &Nginx, from: &str, path: &str, credentials: Option<(&str, &str)>, spoof: Option<&str>) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--interface", from]);
    if let Some((user, password)) = credentials {
        cmd.arg("-u").arg(format!("{user}:{password}"));
    }
    if let Some(spoof) = spoof {
        cmd.arg("-H").arg(format!("X-Forwarded-For: {spoof}"));
    }
    let out = run(cmd.arg(format!("http://{}{path}", proxy.host)));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

const ATTACKER: &str = "127.0.0.2";
const OWNER: &str = "127.0.0.3";
const BYSTANDER: &str = "127.0.0.4";

fn behind_nginx(env: &[(&str, &str)]) -> Option<(Server, Nginx)> {
    let database = futures_block_on(fresh_database());
    let server = Server::start_with_env(&database, Storage::File, env);
    let nginx = Nginx::start(&server.host)?;
    Some((server, nginx))
}

fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

#[test]
fn behind_a_trusted_proxy_limits_apply_per_real_client() {
    let login = [
        ("AERUGO_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("AERUGO_LOGIN_MAX_FAILURES_PER_USER", "3"),
        ("AERUGO_LOGIN_MAX_FAILURES_PER_ADDRESS", "12"),
        ("AERUGO_CLIENT_RATE_LIMIT", "0"),
    ];
    let Some((_server, proxy)) = behind_nginx(&login) else {
        aerugo_test_support::skip("nginx (Debian's nginx package)");
        return;
    };
    let admin = Some((ADMIN_USER, ADMIN_PASSWORD));
    let wrong = Some((ADMIN_USER, "not-the-password"));
    // (No right login first: a node remembers a correct login for a minute and lets it through
    // without asking the limits again.)
    // The guesser backs off for this user after 3 failures, even spoofing other addresses …
    for i in 0..3 {
        assert_eq!(status(&proxy, ATTACKER, "/v2/", wrong, Some(&format!("203.0.113.{i}"))), 401);
    }
    assert_eq!(status(&proxy, ATTACKER, "/v2/", wrong, Some("203.0.113.77")), 429);
    assert_eq!(status(&proxy, ATTACKER, "/v2/", admin, None), 429, "even the right password waits there");
    // … while the user, from their own address, logs in.
    assert_eq!(status(&proxy, OWNER, "/v2/", admin, None), 200, "a named user is not locked out by a guesser");
    // Guessing many names hits the per-address limit: that address waits for every user …
    for i in 0..12 {
        let user = format!("guess{i}");
        let code = status(&proxy, ATTACKER, "/v2/", Some((&user, "x-password")), Some(&format!("198.51.100.{i}")));
        assert!(code == 401 || code == 429, "{code}");
    }
    assert_eq!(status(&proxy, ATTACKER, "/v2/", Some(("fresh-name", "x-password")), Some("192.0.2.9")), 429);
    // … and nobody else.
    assert_eq!(status(&proxy, BYSTANDER, "/v2/", Some(("fresh-name", "x-password")), None), 401);
    assert_eq!(status(&proxy, OWNER, "/v2/", admin, None), 200);
    drop(proxy);

    // The per-client request rate is per real client too, not one cap for the whole ingress.
    let rate = [("AERUGO_TRUSTED_PROXIES", "127.0.0.1"), ("AERUGO_CLIENT_RATE_LIMIT", "2")];
    let (_server, proxy) = behind_nginx(&rate).expect("nginx");
    let mut limited = false;
    for i in 0..40 {
        if status(&proxy, ATTACKER, "/v2/", None, Some(&format!("203.0.113.{i}"))) == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "a client over its rate is refused");
    assert_eq!(status(&proxy, OWNER, "/v2/", admin, None), 200, "another client still has its own budget");
}

/// What `AERUGO_TRUSTED_PROXIES` fixes: without it, the proxy is every client, so one guesser
/// locks the named user out for everybody behind the ingress.
#[test]
fn without_trusted_proxies_every_client_is_the_proxy() {
    let env = [("AERUGO_LOGIN_MAX_FAILURES_PER_USER", "3"), ("AERUGO_CLIENT_RATE_LIMIT", "0")];
    let Some((_server, proxy)) = behind_nginx(&env) else {
        aerugo_test_support::skip("nginx (Debian's nginx package)");
        return;
    };
    let wrong = Some((ADMIN_USER, "not-the-password"));
    for _ in 0..3 {
        assert_eq!(status(&proxy, ATTACKER, "/v2/", wrong, None), 401);
    }
    assert_eq!(status(&proxy, OWNER, "/v2/", Some((ADMIN_USER, ADMIN_PASSWORD)), None), 429);
}
