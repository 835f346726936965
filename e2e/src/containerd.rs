//! A private containerd (Debian's), started by a test with its own root, state and socket, so
//! that `ctr` drives containerd's own registry resolver (`remotes/docker`): the token flow,
//! cross-repository mounts and error handling of the client Kubernetes nodes use.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::Kill;

/// A running containerd; killed when dropped.
pub struct Containerd {
    socket: PathBuf,
    _process: Kill,
    _dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts one, or says why it cannot run here (no `containerd`/`ctr`, not root).
    pub fn start() -> Result<Containerd, String> {
        for tool in ["containerd", "ctr"] {
            let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
            if !found.is_ok_and(|s| s.success()) {
                return Err(format!("{tool} (Debian's containerd package)"));
            }
        }
        let uid = Command::new("id").arg("-u").output().map_err(|e| format!("id -u: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("root, which containerd needs".into());
        }
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let socket = dir.path().join("containerd.sock");
        // Only the content and metadata stores are needed: no CRI, no snapshotters that need
        // kernel support, no tracing.
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.overlayfs", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"#,
            root = dir.path().join("root").display(),
            state = dir.path().join("state").display(),
            socket = socket.display(),
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).map_err(|e| format!("config: {e}"))?;
        let log = std::fs::File::create(dir.path().join("containerd.log")).map_err(|e| format!("log: {e}"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("containerd: {e}"))?;
        let containerd = Containerd { socket, _process: Kill(child), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !containerd.ctr_output(&["version"]).status.success() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(containerd._dir.path().join("containerd.log")).unwrap_or_default();
                panic!("containerd did not start within 20 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(containerd)
    }

    /// The socket `ctr -a` takes.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `ctr` against this containerd (namespace `aerugo-e2e`), whatever its outcome.
    pub fn ctr_output(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "aerugo-e2e"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ctr {args:?}: {e}"))
    }

    /// `ctr` that must succeed; returns its stdout.
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = self.ctr_output(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
