//! Bounded mutation fuzzing of the OCI parsers: repository names, references, digests,
//! `Content-Range` and `Range` headers, manifests and indexes. Each check asserts the parser
//! does not panic and that what it accepts is well-formed (names can never hold a path
//! traversal, accepted values print back as given, ranges stay inside the blob).

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

mod fuzz_engine;

use std::str::FromStr;

use aerugo_oci::range::{RangeRequest, parse_content_range, resolve_range};
use aerugo_oci::{Digest, Reference, RepoName, manifest};
use fuzz_engine::fuzz;

fn text(input: &[u8]) -> Option<&str> {
    std::str::from_utf8(input).ok()
}

#[test]
fn repository_names() {
    let runs = fuzz(
        "names",
        &[b"library/alpine", b"acme/team/app", b"a", b"a/b.c/d__e-f", b"../etc/passwd", b"a//b", b"A/b", b"a/./b"],
        |input| {
            let Some(s) = text(input) else { return };
            if let Ok(name) = RepoName::from_str(s) {
                assert_eq!(name.as_str(), s, "accepted names print back as given");
                assert!(!s.starts_with('/') && !s.ends_with('/') && !s.contains("//"), "{s:?}");
                assert!(s.split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "traversal in {s:?}");
                assert!(
                    s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)),
                    "{s:?}"
                );
            }
        },
    );
    assert!(runs > 100);
}

#[test]
fn references_and_digests() {
    let digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let runs =
        fuzz("references", &[b"latest", b"v1.2.3", digest.as_bytes(), b"sha512:abc", b"-tag", b"a:b"], |input| {
            let Some(s) = text(input) else { return };
            if let Ok(d) = Digest::from_str(s) {
                assert_eq!(d.to_string(), s);
                assert!(d.hex().bytes().all(|b| b.is_ascii_hexdigit()), "{s:?}");
            }
            if let Ok(r) = Reference::from_str(s) {
                assert_eq!(r.to_string(), s);
            }
        });
    assert!(runs > 100);
}

#[test]
fn range_headers() {
    let runs = fuzz(
        "ranges",
        &[b"0-99", b"100-199", b"bytes=0-99", b"bytes=-5", b"bytes=5-", b"5-3", b"0-18446744073709551615"],
        |input| {
            let Some(s) = text(input) else { return };
            if let Ok(r) = parse_content_range(s) {
                assert!(r.start <= r.end && r.end < aerugo_oci::range::MAX_OFFSET, "{s:?}");
                // The length of every accepted range is exact (no overflow, no saturation).
                assert_eq!(r.len() - 1, r.end - r.start, "{s:?}");
            }
            for size in [0u64, 1, 100, u64::MAX] {
                if let RangeRequest::Partial(r) = resolve_range(Some(s), size) {
                    assert!(r.start <= r.end && r.end < size, "{s:?} of {size}");
                }
            }
        },
    );
    assert!(runs > 100);
}

#[test]
fn manifests_and_indexes() {
    let config = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let image = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{config}","size":2}}],"annotations":{{"a":"b"}}}}"#
    );
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{config}","size":2,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
    );
    let nested = "[".repeat(5000);
    let types = [
        None,
        Some("application/vnd.oci.image.manifest.v1+json"),
        Some("application/vnd.oci.image.index.v1+json"),
        Some("application/vnd.docker.distribution.manifest.v2+json"),
        Some("text/plain"),
    ];
    let mut i = 0usize;
    let runs = fuzz("manifests", &[image.as_bytes(), index.as_bytes(), nested.as_bytes(), b"{}", b"null"], |input| {
        i += 1;
        let _ = manifest::parse(input, types[i % types.len()]);
    });
    assert!(runs > 100);
}
