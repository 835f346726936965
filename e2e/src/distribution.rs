//! CNCF Distribution (Debian's `docker-registry`) on loopback, as the upstream of a mirror
//! under test: htpasswd authentication, filesystem storage, and an access log the tests count
//! requests in. It can be stopped and started again on the same port with the same content.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Kill, free_port, http_status, run};

/// A running (or stopped) Distribution.
pub struct Distribution {
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// Its user (htpasswd).
    pub user: &'static str,
    /// Its password.
    pub password: &'static str,
    config: PathBuf,
    log: PathBuf,
    process: Option<Kill>,
    dir: tempfile::TempDir,
}

impl Distribution {
    /// Starts one, or says what is missing (`docker-registry`, `htpasswd`).
    pub fn start() -> Result<Distribution, String> {
        for (tool, package) in [("docker-registry", "docker-registry"), ("htpasswd", "apache2-utils")] {
            if Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .output()
                .map_or(true, |o| !o.status.success())
            {
                return Err(format!("{tool} (Debian's {package})"));
            }
        }
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let (user, password) = ("upstream", "upstream-password");
        let htpasswd = dir.path().join("htpasswd");
        let out = run(Command::new("htpasswd").args(["-Bbn", user, password]));
        std::fs::write(&htpasswd, out.stdout).map_err(|e| format!("htpasswd: {e}"))?;
        let host = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: false}}}}\n\
                 storage:\n  filesystem: {{rootdirectory: {root}}}\n  delete: {{enabled: true}}\n\
                 auth:\n  htpasswd: {{realm: upstream, path: {htpasswd}}}\n\
                 http: {{addr: {host}}}\n",
                root = dir.path().join("data").display(),
                htpasswd = htpasswd.display(),
            ),
        )
        .map_err(|e| format!("config: {e}"))?;
        let log = dir.path().join("access.log");
        let mut registry = Distribution { host, user, password, config, log, process: None, dir };
        registry.up();
        Ok(registry)
    }

    /// Starts the process again (same port, same content); returns once it answers.
    pub fn up(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("log: {e}"));
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::from(log.try_clone().unwrap_or_else(|e| panic!("log: {e}"))))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("docker-registry: {e}"));
        self.process = Some(Kill(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_status(&self.host, "GET", "/v2/") != Some(401) {
            assert!(Instant::now() < deadline, "docker-registry did not start: {}", self.access_log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process (SIGKILL): the upstream is down.
    pub fn down(&mut self) {
        self.process = None;
    }

    /// `user:password`, for skopeo's `--creds`.
    pub fn creds(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }

    /// Pushes the OCI layout `layout` (tag `latest`) as `reference` (`repo:tag`).
    pub fn push(&self, layout: &Path, reference: &str) {
        run(Command::new("skopeo").args([
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            &self.creds(),
            &format!("oci:{}:latest", layout.display()),
            &format!("docker://{}/{reference}", self.host),
        ]));
    }

    /// Everything logged so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Successful `GET`s of `path` (`/v2/...`) in the access log.
    pub fn gets(&self, path: &str) -> usize {
        let needle = format!("\"GET {path} HTTP/1.1\" 200 ");
        self.access_log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// The temporary directory (for layouts).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
