//! The container image `./scripts/dev.sh image` builds (`AERUGO_TEST_IMAGE`, an `oci:` layout
//! reference; `dev.sh test` builds it first): what it declares against the Dockerfile, the
//! chart and the operator's Deployments, and the image run with podman as the chart runs it
//! (uid 65532, read-only root filesystem, no capabilities, no privilege escalation), serving
//! the registry that then hosts the image itself.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aerugo_e2e::*;
use aerugo_test_support as test_support;
use serde_json::Value;

/// The image under test: (layout directory, tag), or `None` after a skip (a failure under CI).
fn image() -> Option<(PathBuf, String)> {
    let reference = test_support::service_env("AERUGO_TEST_IMAGE")?;
    let rest = reference.strip_prefix("oci:").expect("AERUGO_TEST_IMAGE is oci:<dir>:<tag>");
    let (dir, tag) = rest.rsplit_once(':').expect("AERUGO_TEST_IMAGE is oci:<dir>:<tag>");
    Some((dir.into(), tag.to_owned()))
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').expect("digest");
    layout.join("blobs").join(algorithm).join(hex)
}

/// The manifest digest the layout's index names for `tag`.
fn manifest_digest(layout: &Path, tag: &str) -> String {
    let index = read_json(&layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no manifest tagged {tag} in {}", layout.display()));
    entry["digest"].as_str().expect("digest").to_owned()
}

/// The Dockerfile's runtime stage: the lines from `FROM scratch` on, continuation lines joined.
fn runtime_stage() -> Vec<String> {
    let path = repo_root().join("Dockerfile");
    let text = std::fs::read_to_string(&path).expect("Dockerfile");
    let stage = text.split("\nFROM scratch\n").nth(1).expect("the Dockerfile has a FROM scratch runtime stage");
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in stage.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// The argument of the Dockerfile instruction `name` in the runtime stage.
fn instruction(stage: &[String], name: &str) -> String {
    let prefix = format!("{name} ");
    let line =
        stage.iter().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name} in the runtime stage"));
    line[prefix.len()..].trim().to_owned()
}

#[test]
fn the_image_declares_what_the_dockerfile_the_chart_and_the_operator_run() {
    let Some((layout, tag)) = image() else { return };
    let manifest = read_json(&blob(&layout, &manifest_digest(&layout, &tag)));
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let config = read_json(&blob(&layout, manifest["config"]["digest"].as_str().expect("config")));
    let runs = &config["config"];

    // The same entrypoint, command, user and ports as the Dockerfile declares.
    let stage = runtime_stage();
    let entrypoint: Value = serde_json::from_str(&instruction(&stage, "ENTRYPOINT")).expect("ENTRYPOINT is JSON");
    let cmd: Value = serde_json::from_str(&instruction(&stage, "CMD")).expect("CMD is JSON");
    assert_eq!(runs["Entrypoint"], entrypoint);
    assert_eq!(runs["Cmd"], cmd);
    assert_eq!(runs["User"], instruction(&stage, "USER"));
    let mut exposed: Vec<String> =
        runs["ExposedPorts"].as_object().expect("ExposedPorts").keys().cloned().collect::<Vec<_>>();
    exposed.sort();
    let mut declared: Vec<String> =
        instruction(&stage, "EXPOSE").split_whitespace().map(|p| format!("{p}/tcp")).collect();
    declared.sort();
    assert_eq!(exposed, declared);

    // What the chart and the operator's Deployments rely on: the data plane as entrypoint with
    // `serve` (a Registry's pods pass `args: [serve]`), a numeric user (kubelet checks
    // `runAsNonRoot` only against a numeric one) equal to the chart's runAsUser, and the ports
    // the Deployments name (operator/src/registry.rs HTTP_PORT and ADMIN_PORT; the chart's
    // operator admin port).
    assert_eq!(runs["Entrypoint"], serde_json::json!(["aerugo-dataplane"]));
    assert_eq!(runs["Cmd"], serde_json::json!(["serve"]));
    assert_eq!(runs["User"], "65532:65532");
    let helpers =
        std::fs::read_to_string(repo_root().join("charts/aerugo/templates/_helpers.tpl")).expect("chart helpers");
    assert!(helpers.contains("runAsUser: 65532") && helpers.contains("runAsGroup: 65532"), "the chart runs as 65532");
    let operator = std::fs::read_to_string(repo_root().join("operator/src/registry.rs")).expect("operator registry");
    assert!(operator.contains("HTTP_PORT: i32 = 5000") && operator.contains("ADMIN_PORT: i32 = 9090"));
    for port in ["5000/tcp", "9090/tcp", "8081/tcp"] {
        assert!(exposed.iter().any(|p| p == port), "{port} is not exposed: {exposed:?}");
    }

    // One gzip layer from scratch: no base image.
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{layers:?}");
    assert_eq!(layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let compressed = layers[0]["size"].as_u64().expect("size");
    eprintln!("image {tag}: {:.1} MiB compressed", compressed as f64 / 1_048_576.0);
    if std::env::var("AERUGO_TEST_IMAGE_PROFILE").as_deref() == Ok("release") {
        assert!(compressed < 40 << 20, "the release image is {compressed} bytes compressed; the target is < 40 MiB");
    }
}

/// `podman` as root, with the runtime and cgroup manager that work on every machine this runs
/// on (crun refuses a cgroup v1/v2 hybrid hierarchy; runc with cgroupfs takes both).
fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
    cmd
}

/// `podman run` with the chart's security context: uid/gid 65532, a read-only root filesystem
/// (no tmpfs added either: Kubernetes adds none), all capabilities dropped, no privilege
/// escalation; host network. Explicit ulimits: a sandbox may refuse the runtime's defaults.
fn podman_run(name: &str) -> Command {
    let mut cmd = podman();
    cmd.args(["run", "--rm", "--name", name, "--network", "host", "--read-only", "--read-only-tmpfs=false"]);
    cmd.args(["--user", "65532:65532", "--cap-drop", "all", "--security-opt", "no-new-privileges"]);
    cmd.args(["--ulimit", "nofile=8192:8192", "--ulimit", "nproc=4096:4096"]);
    cmd
}

fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The image copied into podman's store, removed when dropped.
struct Pulled(String);

impl Drop for Pulled {
    fn drop(&mut self) {
        let _ = podman().args(["rmi", "--force", &self.0]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// A container removed when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "--force", &self.0]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

fn psql(url: &str, sql: &str) -> String {
    let out = run(Command::new("psql").args(["-q", "-At", url, "-c", sql]));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_image_runs_as_the_chart_runs_it_and_the_registry_hosts_its_own_image() {
    let Some((layout, tag)) = image() else { return };
    let Some(admin_url) = test_support::service_env("AERUGO_TEST_DATABASE_URL") else { return };
    let Some(_) = test_support::service_env("AERUGO_S3_ENDPOINT") else { return };
    // Rootful podman, and volumes chowned to the image's user.
    let uid = run(Command::new("id").arg("-u"));
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        test_support::skip("root (rootful podman, as the chart's nodes run containers)");
        return;
    }
    let reference = format!("oci:{}:{tag}", layout.display());
    let id = std::process::id();
    // Into podman's store under a name of our own (`podman pull oci:` names the image after the
    // layout's path, which a directory such as `.aerugo` makes an invalid reference).
    let image = Pulled(format!("localhost/aerugo-image-test-{id}:{tag}"));
    run(Command::new("skopeo").args(["copy", "--quiet", &reference, &format!("containers-storage:{}", image.0)]));

    // The operator's binary runs from the same image.
    let name = format!("aerugo-image-operator-{id}");
    let _gone = Container(name.clone());
    let out = podman_run(&name).args(["--entrypoint", "aerugo-operator", &image.0, "--help"]).output().expect("podman");
    assert!(out.status.success(), "aerugo-operator --help: {}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: aerugo-operator"), "{}", output_text(&out));

    // Migrations on an empty database as the chart's hook runs them (`aerugo-operator
    // migrate`), then as a Registry's migration Job does (the entrypoint's `migrate`): nothing
    // left to apply.
    let database = format!("aerugo_t_image_{id}");
    psql(&admin_url, &format!("DROP DATABASE IF EXISTS {database}"));
    psql(&admin_url, &format!("CREATE DATABASE {database}"));
    let database_url = format!("{}/{database}", admin_url.rsplit_once('/').expect("admin URL").0);
    let db_env = format!("AERUGO_DATABASE_URL={database_url}");
    let migrate = |name: &str, entrypoint: &str| {
        let _gone = Container(name.to_owned());
        let out = podman_run(name)
            .args(["--env", &db_env, "--entrypoint", entrypoint, &image.0, "migrate"])
            .output()
            .expect("podman");
        assert!(out.status.success(), "{entrypoint} migrate: {}", output_text(&out));
        output_text(&out)
    };
    let first = migrate(&format!("aerugo-image-migrate-{id}"), "aerugo-operator");
    let migrations = std::fs::read_dir(repo_root().join("migrations"))
        .expect("migrations")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql")))
        .count();
    assert_eq!(first.lines().filter(|l| l.starts_with("applied V")).count(), migrations, "{first}");
    assert_eq!(psql(&database_url, "SELECT count(*) FROM refinery_schema_history"), migrations.to_string());
    let second = migrate(&format!("aerugo-image-migrate-again-{id}"), "aerugo-dataplane");
    assert!(second.contains("nothing to apply"), "{second}");

    // Files the container reads and writes, owned by its user: the administrator's password,
    // the token key it generates itself.
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&secrets).expect("mkdir");
    std::fs::create_dir(&keys).expect("mkdir");
    std::fs::write(secrets.join("password"), ADMIN_PASSWORD).expect("password");
    for path in [secrets.join("password"), secrets.clone(), keys.clone()] {
        chown(&path, Some(65532), Some(65532)).expect("chown");
    }
    let secrets_volume = format!("{}:/run/secrets/aerugo:ro", secrets.display());
    let keys_volume = format!("{}:/keys", keys.display());
    for (step, args) in [
        ("keygen", vec!["keygen", "--out", "/keys/token.key"]),
        ("bootstrap", vec!["bootstrap", "--admin-password-file", "/run/secrets/aerugo/password", "--org", "library"]),
    ] {
        let name = format!("aerugo-image-{step}-{id}");
        let _gone = Container(name.clone());
        let out = podman_run(&name)
            .args(["--env", &db_env, "--volume", &secrets_volume, "--volume", &keys_volume, &image.0])
            .args(args)
            .output()
            .expect("podman");
        assert!(out.status.success(), "{step}: {}", output_text(&out));
    }

    // `serve` on S3 (Garage): the entrypoint and command of the image, nothing else.
    let host = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let name = format!("aerugo-image-serve-{id}");
    let serving = Container(name.clone());
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let started = Instant::now();
    let mut child = podman_run(&name)
        .args([
            "--env",
            &db_env,
            "--env",
            &format!("AERUGO_LISTEN={host}"),
            "--env",
            &format!("AERUGO_ADMIN_LISTEN={admin}"),
        ])
        .args(["--env", "AERUGO_TOKEN_KEY_FILE=/keys/token.key", "--env", "AERUGO_STORAGE=s3"])
        .args(["--env", "AERUGO_S3_ENDPOINT", "--env", "AERUGO_S3_REGION", "--env", "AERUGO_S3_BUCKET"])
        .args([
            "--env",
            "AERUGO_S3_ACCESS_KEY_ID",
            "--env",
            "AERUGO_S3_SECRET_ACCESS_KEY",
            "--env",
            "AERUGO_S3_PATH_STYLE",
        ])
        .args(["--volume", &keys_volume, &image.0])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("podman run");
    let deadline = started + Duration::from_secs(60);
    while http_status(&host, "GET", "/readyz") != Some(200) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the container exited ({status}): {}", std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "never ready: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("cold start (podman run to /readyz 200): {} ms", started.elapsed().as_millis());
    assert_eq!(http_status(&host, "GET", "/v2/"), Some(401), "auth is on");
    assert_eq!(http_status(&admin, "GET", "/metrics"), Some(200));

    // The registry hosts its own image: pushed from the layout, pulled back by digest, equal.
    let digest = manifest_digest(&layout, &tag);
    let credentials = format!("{ADMIN_USER}:{ADMIN_PASSWORD}");
    let remote = format!("docker://{host}/library/aerugo");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", &credentials])
        .args([reference.as_str(), &format!("{remote}:{tag}")]));
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", &credentials])
        .arg(format!("{remote}:{tag}")));
    assert_eq!(sha256_digest(&raw.stdout), digest, "the registry serves the manifest byte for byte");
    let back = dir.path().join("back");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false", "--src-creds", &credentials])
        .args([format!("{remote}@{digest}"), format!("oci:{}:{tag}", back.display())]));
    assert_eq!(manifest_digest(&back, &tag), digest);
    let manifest = read_json(&blob(&layout, &digest));
    let layers = manifest["layers"].as_array().expect("layers").iter().map(|l| l["digest"].as_str().expect("digest"));
    for layer in layers.chain([manifest["config"]["digest"].as_str().expect("config")]) {
        let original = std::fs::read(blob(&layout, layer)).expect("blob");
        let copy = std::fs::read(blob(&back, layer)).expect("pulled blob");
        assert!(original == copy, "{layer} differs after the round trip");
    }

    // SIGTERM stops it cleanly (the chart's pods are stopped this way).
    let stop = podman().args(["stop", "--time", "10", &name]).output().expect("podman stop");
    assert!(stop.status.success(), "podman stop: {}", output_text(&stop));
    let status = child.wait().expect("wait");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "serve exited with {status} on SIGTERM: {log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    // A container's log is a pipe: no terminal colour codes in it.
    assert!(!log.contains('\u{1b}'), "colour codes in the container's log: {log}");
    drop(serving);
    psql(&admin_url, &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"));
}
