//! End-to-end harness: runs the real `aerugo-dataplane` binary on a loopback port against a
//! fresh database and real storage, and drives it with real clients (skopeo, oras).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub mod containerd;
pub mod distribution;
pub mod kubelet;
pub mod postgres;
pub mod receiver;

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

/// The checkout's root (the workspace's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh, migrated database for one test.
pub async fn fresh_database() -> String {
    aerugo_db::testing::fresh_database().await.unwrap_or_else(|e| panic!("fresh database (is Postgres running?): {e}"))
}

/// A free loopback port, never one this process was given before: the listener that found it
/// is closed at once, so the kernel may hand the same port out again (two calls in a row once
/// gave a data plane the same listen and admin port).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("addr: {e}"));
        let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
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

    /// Starts a node that signs with the same key as `peer`, with extra environment.
    pub fn start_next_to_with_env(peer: &Server, database_url: &str, storage: Storage, env: &[(&str, &str)]) -> Server {
        Self::start_inner(database_url, storage, Some(&peer.key_file), None, env)
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

impl Server {
    /// Kills the process at once (SIGKILL): no shutdown, no lease given back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// One HTTP/1.0 request as the administrator (Basic); returns the status and body.
pub fn request(host: &str, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap_or_else(|e| panic!("timeout: {e}"));
    let auth = basic(ADMIN_USER, ADMIN_PASSWORD);
    let content_type = content_type.map(|c| format!("Content-Type: {c}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nAuthorization: {auth}\r\n{content_type}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap_or_else(|e| panic!("write: {e}"));
    stream.write_all(body).unwrap_or_else(|e| panic!("write body: {e}"));
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap_or_else(|e| panic!("read: {e}"));
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no header end"));
    let status = String::from_utf8_lossy(&response[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status"));
    (status, response[split + 4..].to_vec())
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

/// A chunked upload driven with curl and Basic `credentials`, one request at a time, each to
/// any node of one registry: POST, PATCHes, then the final PUT.
pub struct ChunkedUpload {
    credentials: String,
    repo: String,
    /// The current `Location` path.
    pub location: String,
    offset: usize,
    dir: tempfile::TempDir,
}

impl ChunkedUpload {
    fn curl(&self, args: &[&str]) -> String {
        let out = run(Command::new("curl")
            .args(["-sS", "-u", &self.credentials, "-H", "Expect:", "-D", "-", "-o", "/dev/null"])
            .args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn location_of(headers: &str) -> String {
        headers
            .lines()
            .find_map(|l| l.to_ascii_lowercase().starts_with("location:").then(|| l[9..].trim().to_owned()))
            .unwrap_or_else(|| panic!("no Location in {headers}"))
    }

    fn body_file(&self, bytes: &[u8]) -> String {
        let path = self.dir.path().join(format!("chunk-{}", self.offset));
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write: {e}"));
        format!("@{}", path.display())
    }

    /// Opens the session on `host`; panics unless it answers 202.
    pub fn start(credentials: &str, host: &str, repo: &str) -> ChunkedUpload {
        let mut upload = ChunkedUpload {
            credentials: credentials.to_owned(),
            repo: repo.to_owned(),
            location: String::new(),
            offset: 0,
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
        };
        let started = upload.curl(&["-X", "POST", &format!("http://{host}/v2/{}/blobs/uploads/", upload.repo)]);
        assert!(started.starts_with("HTTP/1.1 202"), "{started}");
        upload.location = Self::location_of(&started);
        upload
    }

    /// Sends the next chunk to `host`; panics unless it answers 202.
    pub fn patch(&mut self, host: &str, chunk: &[u8]) {
        let range = format!("Content-Range: {}-{}", self.offset, self.offset + chunk.len() - 1);
        let body = self.body_file(chunk);
        let url = format!("http://{host}{}", self.location);
        let headers = ["-X", "PATCH", "-H", "Content-Type: application/octet-stream", "-H", &range];
        let patched = self.curl(&[&headers[..], &["--data-binary", &body, &url][..]].concat());
        assert!(patched.starts_with("HTTP/1.1 202"), "{patched}");
        self.location = Self::location_of(&patched);
        self.offset += chunk.len();
    }

    /// The upload's status from `host` (response headers).
    pub fn status(&self, host: &str) -> String {
        self.curl(&[&format!("http://{host}{}", self.location)])
    }

    /// Sends the last bytes and `digest` to `host`; panics unless it answers 201.
    pub fn finish(self, host: &str, last: &[u8], digest: &str) {
        let body = self.body_file(last);
        let url = format!("http://{host}{}?digest={digest}", self.location);
        let put =
            self.curl(&["-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary", &body, &url]);
        assert!(put.starts_with("HTTP/1.1 201"), "{put}");
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Uploads `blob` to `repo` in three requests, each sent to its own node of one registry:
/// `[POST, PATCH, PUT]` — the PATCH carries the first `split` bytes, the final PUT the rest.
/// Returns the blob's digest.
pub fn upload_across(credentials: &str, nodes: [&str; 3], repo: &str, blob: &[u8], split: usize) -> String {
    let digest = sha256_digest(blob);
    let mut upload = ChunkedUpload::start(credentials, nodes[0], repo);
    upload.patch(nodes[1], &blob[..split]);
    upload.finish(nodes[2], &blob[split..], &digest);
    digest
}

/// A fresh database with the site administrator `admin` (no password), the organizations'
/// owner in `examples/`.
pub async fn database_with_admin() -> String {
    let database = fresh_database().await;
    let db = aerugo_db::pool(&database, 1).unwrap_or_else(|e| panic!("pool: {e}"));
    let client = db.get().await.unwrap_or_else(|e| panic!("database: {e}"));
    aerugo_db::tenancy::create_user(&client, "admin", None, None, true, "system")
        .await
        .unwrap_or_else(|e| panic!("user admin: {e}"));
    database
}

/// The API emulator with the CRDs of `crds/`, served on loopback, and a kubeconfig for it.
pub struct EmulatedCluster {
    /// The emulator (in this process).
    pub emulator: aerugo_kube_emulator::Emulator,
    /// Its loopback server.
    pub api: aerugo_kube_emulator::Loopback,
    /// A kubeconfig pointing at it.
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl EmulatedCluster {
    /// Starts one.
    pub async fn start() -> EmulatedCluster {
        let emulator = aerugo_kube_emulator::Emulator::new();
        let crds = repo_root().join("crds");
        emulator.install_crds_from(&crds).unwrap_or_else(|e| panic!("CRDs: {e}"));
        let api = emulator.serve().await.unwrap_or_else(|e| panic!("loopback: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap_or_else(|e| panic!("kubeconfig: {e}"));
        EmulatedCluster { emulator, api, kubeconfig, _dir: dir }
    }
}

/// A child process, killed (SIGKILL) when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `aerugo-operator run` against the API server of `kubeconfig`, as replica `identity`, with
/// its Lease in namespace `default`, plus `env`.
pub fn operator_process(kubeconfig: &Path, database_url: &str, identity: &str, env: &[(&str, &str)]) -> Kill {
    let admin = format!("127.0.0.1:{}", free_port());
    Kill(
        Command::new(operator_bin())
            .arg("run")
            .env("KUBECONFIG", kubeconfig)
            .env("AERUGO_DATABASE_URL", database_url)
            .env("AERUGO_REGISTRY_HOST", "registry.test")
            .env("AERUGO_OPERATOR_ADMIN_LISTEN", admin)
            .env("POD_NAMESPACE", "default")
            .env("HOSTNAME", identity)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .spawn()
            .unwrap_or_else(|e| panic!("operator starts: {e}")),
    )
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
