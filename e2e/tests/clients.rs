//! Real registry clients against the real binary over a socket: skopeo (OCI image, multi-arch
//! index with `--all`, `--format v2s2`, registry-to-registry copy with cross-repository mount,
//! delete), oras (monolithic and chunked push, artifact with subject, pull), plain HTTP for
//! HEAD lengths, and an upload begun on one node and finished on another.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::process::Command;

use aerugo_e2e::*;

#[track_caller]
fn s3_available() -> bool {
    aerugo_test_support::service_env("AERUGO_TEST_S3").is_some()
}

#[tokio::test]
async fn skopeo_oci_image_round_trip() {
    let server = Server::start(&fresh_database().await, Storage::File);
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    let digest = oci_layout(&src, "linux/amd64", 200_000, 1);
    let dest = format!("docker://{}/e2e/oci/app:v1", server.host);
    server.skopeo(&["copy", "--dest-tls-verify=false", &format!("oci:{}:latest", src.display()), &dest]);
    let inspect = server.skopeo(&["inspect", "--tls-verify=false", "--format", "{{.Digest}}", &dest]);
    assert_eq!(String::from_utf8_lossy(&inspect.stdout).trim(), digest);

    let back = work.path().join("back");
    server.skopeo(&["copy", "--src-tls-verify=false", &dest, &format!("oci:{}:v1", back.display())]);
    for entry in std::fs::read_dir(src.join("blobs/sha256")).expect("blobs") {
        let name = entry.expect("entry").file_name();
        let original = std::fs::read(src.join("blobs/sha256").join(&name)).expect("read");
        let pulled = std::fs::read(back.join("blobs/sha256").join(&name)).expect("pulled blob present");
        assert_eq!(original, pulled, "blob {name:?} differs after the round trip");
    }
}

#[tokio::test]
async fn skopeo_multi_arch_index_with_all_on_s3_with_presigned_pulls() {
    if !s3_available() {
        return;
    }
    let server = Server::start(&fresh_database().await, Storage::S3);
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    let digest = oci_layout(&src, "linux/amd64,linux/arm64,linux/s390x", 50_000, 2);
    let dest = format!("docker://{}/e2e/multi:v1", server.host);
    server.skopeo(&["copy", "--all", "--dest-tls-verify=false", &format!("oci:{}:latest", src.display()), &dest]);
    let index = server.raw_manifest("e2e/multi:v1");
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(3));
    let back = work.path().join("back");
    server.skopeo(&["copy", "--all", "--src-tls-verify=false", &dest, &format!("oci:{}:v1", back.display())]);
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).expect("index.json")).expect("json");
    assert_eq!(layout["manifests"][0]["digest"], digest.as_str());
    // One architecture alone resolves through the index.
    let one = server.skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "arm64",
        "--format",
        "{{.Architecture}}",
        &dest,
    ]);
    assert_eq!(String::from_utf8_lossy(&one.stdout).trim(), "arm64");
}

#[tokio::test]
async fn skopeo_format_v2s2_conversion() {
    let server = Server::start(&fresh_database().await, Storage::File);
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    oci_layout(&src, "linux/amd64", 10_000, 3);
    let dest = format!("docker://{}/e2e/v2s2:v1", server.host);
    server.skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", src.display()),
        &dest,
    ]);
    let manifest = server.raw_manifest("e2e/v2s2:v1");
    assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");
    server.skopeo(&["copy", "--src-tls-verify=false", &dest, &format!("dir:{}", work.path().join("out").display())]);
}

#[tokio::test]
async fn skopeo_registry_to_registry_copy_mounts_and_delete() {
    let database = fresh_database().await;
    let server = Server::start(&database, Storage::File);
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    oci_layout(&src, "linux/amd64", 100_000, 4);
    let a = format!("docker://{}/team/a:v1", server.host);
    let b = format!("docker://{}/team/b:v1", server.host);
    server.skopeo(&["copy", "--dest-tls-verify=false", &format!("oci:{}:latest", src.display()), &a]);
    server.skopeo(&["copy", "--src-tls-verify=false", "--dest-tls-verify=false", &a, &b]);
    assert_eq!(server.raw_manifest("team/a:v1"), server.raw_manifest("team/b:v1"));
    let pool = aerugo_db::pool(&database, 1).expect("pool");
    let client = pool.get().await.expect("connection");
    let mounts: i64 = client
        .query_one("SELECT count(*) FROM audit_events WHERE action = 'blob.mount' AND target = 'team/b'", &[])
        .await
        .expect("count")
        .get(0);
    // skopeo re-sends the small config but mounts layers it knows are in the source repository.
    assert!(mounts >= 1, "the layer should be mounted, not re-uploaded");

    server.skopeo(&["delete", "--tls-verify=false", &b]);
    let gone = Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", &server.auth_file)
        .args(["inspect", "--tls-verify=false", "--raw", &b])
        .output()
        .expect("skopeo");
    assert!(!gone.status.success(), "deleted image still resolves");
    server.raw_manifest("team/a:v1");
}

#[tokio::test]
async fn oras_monolithic_and_chunked_push_then_pull() {
    let server = Server::start(&fresh_database().await, Storage::File);
    let work = tempfile::tempdir().expect("tempdir");
    for (name, size, chunk) in [("small.txt", 1_000usize, None), ("big.bin", 3_500_000, Some("1000000"))] {
        let path = work.path().join(name);
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let reference = format!("oras/files:{}", name.replace('.', "-"));
        let mut args = vec!["push", &server.host, &reference, path.to_str().expect("utf8 path")];
        if let Some(chunk) = chunk {
            args.extend(["--chunk-size", chunk]);
        }
        let digest = server.oras(&args);
        assert!(digest.starts_with("sha256:"), "push printed {digest:?}");
        let out = work.path().join(format!("out-{name}"));
        server.oras(&["pull", &server.host, &reference, out.to_str().expect("utf8 path")]);
        assert_eq!(std::fs::read(out.join(name)).expect("pulled file"), data, "{name} differs after pull");
    }
}

#[tokio::test]
async fn oras_artifact_with_subject_is_listed_as_a_referrer() {
    let server = Server::start(&fresh_database().await, Storage::File);
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    let subject = oci_layout(&src, "linux/amd64", 5_000, 5);
    server.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", src.display()),
        &format!("docker://{}/signed/app:v1", server.host),
    ]);
    let sbom = work.path().join("sbom.json");
    std::fs::write(&sbom, br#"{"packages":[]}"#).expect("write");
    let artifact =
        server.oras(&["push", &server.host, "signed/app:sbom", sbom.to_str().expect("utf8"), "--subject-tag", "v1"]);
    let response = server.http_as_admin("GET", &format!("/v2/signed/app/referrers/{subject}")).expect("referrers");
    let body = response.split("\r\n\r\n").nth(1).expect("body");
    let index: serde_json::Value = serde_json::from_str(body).expect("json");
    // The admin port counts the requests by route pattern.
    let metrics = http_raw(&server.admin, "GET", "/metrics").expect("metrics");
    assert!(
        metrics.contains(
            r#"aerugo_http_requests_total{method="GET",route="/v2/{name:.+}/referrers/{digest}",status="200"} 1"#
        ),
        "{metrics}"
    );
    let digests: Vec<&str> =
        index["manifests"].as_array().expect("manifests").iter().filter_map(|m| m["digest"].as_str()).collect();
    assert_eq!(digests, [artifact.as_str()]);
}

#[tokio::test]
async fn head_over_a_socket_reports_the_blob_length_without_a_body() {
    let server = Server::start(&fresh_database().await, Storage::File);
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    oci_layout(&src, "linux/amd64", 77_777, 6);
    server.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", src.display()),
        &format!("docker://{}/h/app:v1", server.host),
    ]);
    let manifest = server.raw_manifest("h/app:v1");
    let layer = manifest["layers"][0]["digest"].as_str().expect("layer digest");
    let size = manifest["layers"][0]["size"].as_u64().expect("layer size");
    let response = server.http_as_admin("HEAD", &format!("/v2/h/app/blobs/{layer}")).expect("head");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers");
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("content-length: {size}")), "{head}");
    assert!(body.is_empty());
}

#[tokio::test]
async fn upload_begun_on_one_node_is_finished_on_another() {
    if !s3_available() {
        return;
    }
    let database = fresh_database().await;
    let (a, b) = (Server::start(&database, Storage::S3), Server::start(&database, Storage::S3));
    let data: Vec<u8> = (0..7_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let admin = format!("{ADMIN_USER}:{ADMIN_PASSWORD}");
    // Begun on a, continued on b, finished on a.
    let digest = upload_across(&admin, [&a.host, &b.host, &a.host], "nodes/app", &data, 4_000_000);
    // Visible on both nodes at once; the pull is a presigned redirect that curl follows.
    for node in [&a, &b] {
        let out = run(Command::new("curl").args([
            "-sSfL",
            "-u",
            &admin,
            &format!("http://{}/v2/nodes/app/blobs/{digest}", node.host),
        ]));
        assert_eq!(out.stdout.len(), data.len());
        assert_eq!(sha256_digest(&out.stdout), digest);
    }
}

/// podman and buildah with storage of their own (vfs, so no kernel overlay support is needed).
fn container_tool(server: &Server, tool: &str, storage: &std::path::Path, args: &[&str]) -> std::process::Output {
    let root = storage.join("root");
    let runroot = storage.join("run");
    run(Command::new(tool)
        .env("REGISTRY_AUTH_FILE", &server.auth_file)
        .arg("--root")
        .arg(&root)
        .arg("--runroot")
        .arg(&runroot)
        .args(["--storage-driver", "vfs"])
        .args(args))
}

#[tokio::test]
async fn podman_and_buildah_pull_build_and_push() {
    let server = Server::start(&fresh_database().await, Storage::File);
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    oci_layout(&src, "linux/amd64", 30_000, 7);
    let base = format!("{}/base/image:v1", server.host);
    server.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", src.display()),
        &format!("docker://{base}"),
    ]);
    let storage = work.path().join("containers");

    container_tool(&server, "podman", &storage, &["pull", "-q", "--tls-verify=false", &base]);
    let copy = format!("{}/podman/copy:v1", server.host);
    container_tool(&server, "podman", &storage, &["tag", &base, &copy]);
    container_tool(&server, "podman", &storage, &["push", "-q", "--tls-verify=false", &copy]);
    let pushed = server.raw_manifest("podman/copy:v1");
    assert_eq!(pushed["layers"].as_array().map(Vec::len), Some(1));

    let out = container_tool(&server, "buildah", &storage, &["from", "--tls-verify=false", &base]);
    let container = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    container_tool(&server, "buildah", &storage, &["config", "--label", "built-by=aerugo-e2e", &container]);
    container_tool(&server, "buildah", &storage, &["commit", "-q", &container, "built:v1"]);
    let built = format!("docker://{}/buildah/built:v1", server.host);
    container_tool(&server, "buildah", &storage, &["push", "-q", "--tls-verify=false", "built:v1", &built]);
    let config = server.skopeo(&["inspect", "--tls-verify=false", "--config", &built]);
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).expect("config json");
    assert_eq!(config["config"]["Labels"]["built-by"], "aerugo-e2e");
}

/// `aerugo-dataplane fsck` on the settings of a running node: clean after a skopeo push,
/// exit 1 once a manifest's blob is unlinked, and `--repair` links it back.
#[tokio::test]
async fn fsck_command_reports_and_repairs() {
    if !s3_available() {
        return;
    }
    let database = fresh_database().await;
    let server = Server::start(&database, Storage::S3);
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    oci_layout(&src, "linux/amd64", 20_000, 9);
    let dest = format!("docker://{}/e2e/fsck:v1", server.host);
    server.skopeo(&["copy", "--dest-tls-verify=false", &format!("oci:{}:latest", src.display()), &dest]);
    let fsck = |repair: bool| {
        let mut cmd = Command::new(dataplane_bin());
        cmd.arg("fsck").env("AERUGO_DATABASE_URL", &database).env("AERUGO_STORAGE", "s3").env("AERUGO_LOG", "warn");
        if repair {
            cmd.arg("--repair");
        }
        let out = cmd.output().expect("fsck runs");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, report) = fsck(false);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("0 problems"), "{report}");
    let db = aerugo_db::pool(&database, 1).expect("pool");
    db.get()
        .await
        .expect("client")
        .execute("DELETE FROM repository_blobs WHERE digest IN (SELECT digest FROM manifest_blobs LIMIT 1)", &[])
        .await
        .expect("break a link");
    let (code, report) = fsck(false);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("which the repository does not link"), "{report}");
    let (code, report) = fsck(true);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(fsck(false).0, Some(0));
    server.skopeo(&["inspect", "--tls-verify=false", &dest]);
}
