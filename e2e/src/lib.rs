//! End-to-end harness: runs the real `aerugo-dataplane` binary on a loopback port against a
//! fresh database and real storage, and drives it with real clients (skopeo, oras).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub mod kubelet;

/// Where blobs go for a server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// A temporary directory.
    File,
    /// The Garage started by `scripts/dev.sh test` (its `AERUGO_S3_*` environment).
    S3,
}

/// The site administrator every test server is bootstrapped with.
pub const ADMIN_USER: &str = "admin";
/// Its password.
pub const ADMIN_PASSWORD: &str = "aerugo-e2e-admin-password";

/// A data-plane process; killed when dropped. It signs tokens with a key of its own (or the
/// key of the server it was started next to) and has the site administrator `admin`, whose
/// credentials its `skopeo`, `oras` and container-tool helpers use.
pub struct Server {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// `127.0.0.1:<port>` of the admin server (`/metrics`).
    pub admin: String,
    /// A containers auth file (`REGISTRY_AUTH_FILE`) with the administrator's credentials.
    pub auth_file: PathBuf,
    /// The token signing key file.
    pub key_file: PathBuf,
    /// The blob directory, with `Storage::File`.
    pub blobs: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// The `aerugo-dataplane` binary: `AERUGO_DATAPLANE_BIN`, else next to the test executable.
pub fn dataplane_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("AERUGO_DATAPLANE_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current exe: {e}"));
    let profile_dir = exe.parent().and_then(Path::parent).unwrap_or_else(|| panic!("no target dir above {exe:?}"));
    profile_dir.join("aerugo-dataplane")
}

/// The `aerugo-operator` binary: `AERUGO_OPERATOR_BIN`, else next to the data plane's.
pub fn operator_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("AERUGO_OPERATOR_BIN") {
        return bin.into();
    }
    dataplane_bin().with_file_name("aerugo-operator")
}

/// A fresh, migrated database for one test.
pub async fn fresh_database() -> String {
    aerugo_db::testing::fresh_database().await.unwrap_or_else(|e| panic!("fresh database (is Postgres running?): {e}"))
}

/// A free loopback port.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("addr: {e}"))
}

impl Server {
    /// Starts a node on `database_url` and waits until `/readyz` answers 200.
    pub fn start(database_url: &str, storage: Storage) -> Server {
        Self::start_with_key(database_url, storage, None)
    }

    /// Starts a node that signs with the same key as `peer`, so tokens work on both.
    pub fn start_next_to(peer: &Server, database_url: &str, storage: Storage) -> Server {
        Self::start_with_key(database_url, storage, Some(&peer.key_file))
    }

    /// Starts a node logging at `debug` into `log` (instead of the test's stderr).
    pub fn start_logging_to(database_url: &str, storage: Storage, log: &Path) -> Server {
        Self::start_inner(database_url, storage, None, Some(log), &[])
    }

    /// Starts a node with extra environment (settings under test).
    pub fn start_with_env(database_url: &str, storage: Storage, env: &[(&str, &str)]) -> Server {
        Self::start_inner(database_url, storage, None, None, env)
    }

    fn start_with_key(database_url: &str, storage: Storage, key: Option<&Path>) -> Server {
        Self::start_inner(database_url, storage, key, None, &[])
    }

    fn start_inner(
        database_url: &str,
        storage: Storage,
        key: Option<&Path>,
        log: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Server {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let key_file = dir.path().join("token.key");
        match key {
            Some(shared) => {
                std::fs::copy(shared, &key_file).unwrap_or_else(|e| panic!("copy key: {e}"));
            }
            None => {
                run(Command::new(dataplane_bin()).arg("keygen").arg("--out").arg(&key_file));
            }
        }
        let password_file = dir.path().join("admin-password");
        std::fs::write(&password_file, ADMIN_PASSWORD).unwrap_or_else(|e| panic!("write: {e}"));
        run(Command::new(dataplane_bin())
            .arg("bootstrap")
            .env("AERUGO_DATABASE_URL", database_url)
            .env("AERUGO_LOG", "warn")
            .arg("--admin-password-file")
            .arg(&password_file));
        let host = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(dataplane_bin());
        cmd.arg("serve")
            .env("AERUGO_LISTEN", &host)
            .env("AERUGO_ADMIN_LISTEN", &admin)
            .env("AERUGO_DATABASE_URL", database_url)
            .env("AERUGO_WORKERS", "2")
            .env("AERUGO_TOKEN_KEY_FILE", &key_file)
            .env("AERUGO_LOG", if log.is_some() { "debug" } else { "warn" })
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(path) = log {
            // Logs go to stdout; both streams into the file.
            let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("log file: {e}"));
            let copy = file.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
            cmd.stdout(Stdio::from(file)).stderr(Stdio::from(copy));
        }
        cmd.envs(env.iter().copied());
        match storage {
            Storage::File => {
                cmd.env("AERUGO_STORAGE", "file").env("AERUGO_STORAGE_PATH", dir.path().join("blobs"));
            }
            Storage::S3 => {
                cmd.env("AERUGO_STORAGE", "s3").env("AERUGO_REDIRECT", "presign");
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {:?}: {e}", dataplane_bin()));
        let auth_file = dir.path().join("auth.json");
        let auth = basic(ADMIN_USER, ADMIN_PASSWORD);
        let auths = serde_json::json!({ "auths": { &host: { "auth": auth.trim_start_matches("Basic ") } } });
        std::fs::write(&auth_file, auths.to_string()).unwrap_or_else(|e| panic!("write auth file: {e}"));
        let blobs = matches!(storage, Storage::File).then(|| dir.path().join("blobs"));
        let server = Server { child, host, admin, auth_file, key_file, blobs, _dir: dir };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_status(&self.host, "GET", "/readyz") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("data plane on {} never became ready", self.host);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `skopeo` with the administrator's credentials.
    pub fn skopeo(&self, args: &[&str]) -> Output {
        run(Command::new("skopeo").env("REGISTRY_AUTH_FILE", &self.auth_file).args(args))
    }

    /// Runs the oras Python client helper as the administrator.
    pub fn oras(&self, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/oras_client.py");
        let out = run(Command::new("python3")
            .env("AERUGO_E2E_USER", ADMIN_USER)
            .env("AERUGO_E2E_PASSWORD", ADMIN_PASSWORD)
            .arg(script)
            .args(args));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Raw manifest bytes of `reference` as skopeo sees them.
    pub fn raw_manifest(&self, reference: &str) -> serde_json::Value {
        let out =
            self.skopeo(&["inspect", "--tls-verify=false", "--raw", &format!("docker://{}/{reference}", self.host)]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("manifest of {reference} is not JSON: {e}"))
    }

    /// The raw response to a bodyless request with the administrator's Basic credentials.
    pub fn http_as_admin(&self, method: &str, path: &str) -> Option<String> {
        http_raw_with(&self.host, method, path, Some(&basic(ADMIN_USER, ADMIN_PASSWORD)))
    }
}

/// Status code of a bodyless request, or `None` if nothing answered.
pub fn http_status(host: &str, method: &str, path: &str) -> Option<u16> {
    let response = http_raw(host, method, path)?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// The raw response (status line, headers, body) to a bodyless HTTP/1.0 request.
pub fn http_raw(host: &str, method: &str, path: &str) -> Option<String> {
    http_raw_with(host, method, path, None)
}

/// The raw response to a bodyless HTTP/1.0 request with an optional `Authorization` value.
pub fn http_raw_with(host: &str, method: &str, path: &str, authorization: Option<&str>) -> Option<String> {
    let mut stream = TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Runs a command, returning its output; panics with stderr if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Uploads `blob` to `repo` in three requests with curl and Basic `credentials`, each sent to
/// its own node of one registry: `[POST, PATCH, PUT]` — the PATCH carries the first `split`
/// bytes, the final PUT the rest. Returns the blob's digest; panics unless the PATCH answers
/// 202 and the PUT 201.
pub fn upload_across(credentials: &str, nodes: [&str; 3], repo: &str, blob: &[u8], split: usize) -> String {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    std::fs::write(&first, &blob[..split]).unwrap_or_else(|e| panic!("write: {e}"));
    std::fs::write(&second, &blob[split..]).unwrap_or_else(|e| panic!("write: {e}"));
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(blob)));
    let curl = |args: &[&str]| {
        let out = run(Command::new("curl")
            .args(["-sS", "-u", credentials, "-H", "Expect:", "-D", "-", "-o", "/dev/null"])
            .args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let location = |headers: &str| {
        headers
            .lines()
            .find_map(|l| l.to_ascii_lowercase().starts_with("location:").then(|| l[9..].trim().to_owned()))
            .unwrap_or_else(|| panic!("no Location in {headers}"))
    };
    let started = curl(&["-X", "POST", &format!("http://{}/v2/{repo}/blobs/uploads/", nodes[0])]);
    let range = format!("Content-Range: 0-{}", split - 1);
    let patched = curl(&[
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/octet-stream",
        "-H",
        &range,
        "--data-binary",
        &format!("@{}", first.display()),
        &format!("http://{}{}", nodes[1], location(&started)),
    ]);
    assert!(patched.starts_with("HTTP/1.1 202"), "{patched}");
    let put = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", second.display()),
        &format!("http://{}{}?digest={digest}", nodes[2], location(&patched)),
    ]);
    assert!(put.starts_with("HTTP/1.1 201"), "{put}");
    digest
}

/// Writes an OCI layout with `make_oci_layout.py`; returns the top manifest digest.
pub fn oci_layout(dir: &Path, platforms: &str, layer_bytes: usize, seed: u32) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/make_oci_layout.py");
    let out = run(Command::new("python3").arg(script).arg(dir).args([
        "--platforms",
        platforms,
        "--layer-bytes",
        &layer_bytes.to_string(),
        "--seed",
        &seed.to_string(),
    ]));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A TCP load balancer on loopback that hands each new connection to the next backend in turn,
/// as a Kubernetes Service in front of several pods does. Backends can be set after it starts.
pub struct RoundRobin {
    /// `127.0.0.1:<port>`.
    pub host: String,
    backends: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundRobin {
    /// Listens on a free port; connections are refused until backends are set.
    pub async fn start() -> RoundRobin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let host = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|e| panic!("addr: {e}"));
        let backends: Arc<Mutex<Vec<String>>> = Arc::default();
        let task = {
            let backends = backends.clone();
            tokio::spawn(async move {
                let mut next = 0usize;
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let backend = {
                        let all = backends.lock().unwrap_or_else(PoisonError::into_inner);
                        if all.is_empty() {
                            continue;
                        }
                        next = next.wrapping_add(1);
                        all[next % all.len()].clone()
                    };
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&backend).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            })
        };
        RoundRobin { host, backends, task }
    }

    /// Replaces the backends.
    pub fn set_backends(&self, hosts: Vec<String>) {
        *self.backends.lock().unwrap_or_else(PoisonError::into_inner) = hosts;
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}
