//! A private PostgreSQL cluster from the machine's server binaries (`/usr/lib/postgresql/*/bin`),
//! for tests that restart the server or configure it (TLS); stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{free_port, run};

/// A running private cluster on a loopback port.
pub struct Postgres {
    bin: PathBuf,
    data: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// What a test puts into the cluster before it starts.
#[derive(Debug, Default)]
pub struct Setup<'a> {
    /// Lines appended to `postgresql.conf`.
    pub settings: &'a [&'a str],
    /// The whole `pg_hba.conf`, if not initdb's.
    pub hba: Option<&'a str>,
    /// Files written into the data directory, readable by the server only (certificates, keys).
    pub files: &'a [(&'a str, &'a [u8])],
}

impl Postgres {
    /// A started cluster with initdb's configuration; `None` without server binaries.
    pub fn start() -> Option<Postgres> {
        Self::start_with(&Setup::default())
    }

    /// A started cluster configured by `setup`; `None` without server binaries.
    pub fn start_with(setup: &Setup<'_>) -> Option<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("pg_ctl").exists())
            .max()?;
        let data = tempfile::Builder::new().prefix("aerugo-pg-").tempdir_in("/tmp").ok()?;
        if is_root() {
            run(Command::new("chown").arg("postgres").arg(data.path()));
        }
        let pg = Postgres { bin, data, port: free_port() };
        run(pg.as_postgres("initdb").arg("-D").arg(pg.data.path()).args(["-U", "postgres", "--auth=trust", "-N"]));
        let dir = pg.data.path();
        if !setup.settings.is_empty() {
            let mut conf = std::fs::read_to_string(dir.join("postgresql.conf")).unwrap_or_else(|e| panic!("conf: {e}"));
            conf.push_str(&setup.settings.join("\n"));
            conf.push('\n');
            write_private(&dir.join("postgresql.conf"), conf.as_bytes());
        }
        if let Some(hba) = setup.hba {
            write_private(&dir.join("pg_hba.conf"), hba.as_bytes());
        }
        for (name, bytes) in setup.files {
            write_private(&dir.join(name), bytes);
        }
        pg.up();
        Some(pg)
    }

    fn as_postgres(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        // As root, the cluster runs as the postgres user (initdb refuses root).
        if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    /// Starts the server (again).
    pub fn up(&self) {
        let options = format!("-p {} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off", self.port);
        let log = self.data.path().join("server.log");
        run(self
            .as_postgres("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(self.data.path())
            .arg("-l")
            .arg(log)
            .args(["-w", "-o", &options]));
    }

    /// An immediate stop: connections are cut, nothing shuts down cleanly.
    pub fn crash(&self) {
        run(self.as_postgres("pg_ctl").arg("stop").arg("-D").arg(self.data.path()).args(["-m", "immediate", "-w"]));
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ =
            self.as_postgres("pg_ctl").arg("stop").arg("-D").arg(self.data.path()).args(["-m", "immediate"]).output();
    }
}

/// Writes a file only its owner (the server's user) can read.
fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if is_root() {
        run(Command::new("chown").arg("postgres").arg(path));
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}
