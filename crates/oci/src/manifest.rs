//! Manifest parsing and validation for the types the registry stores: OCI image manifest and
//! index, Docker schema 2 manifest and manifest list, and OCI artifacts (`artifactType`,
//! `subject`). The payload itself is never re-serialized: callers store the bytes they got.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Digest;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Largest manifest the registry accepts, per the distribution spec's recommended limit.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Layer media types whose content lives elsewhere (`urls`) and need not be in the registry.
const NON_DISTRIBUTABLE: &[&str] = &[
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// Is `media_type` one of the manifest types the registry serves from `/manifests/`?
pub fn is_manifest_media_type(media_type: &str) -> bool {
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST].contains(&media_type)
}

/// A content descriptor (`mediaType`, `digest`, `size`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes of the referenced content.
    pub size: u64,
    /// Artifact type, on index entries and referrers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
    /// Alternate locations; only meaningful for non-distributable layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Value>,
}

/// Whether a manifest references blobs (an image) or other manifests (an index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// OCI image manifest or Docker schema 2 manifest.
    Image,
    /// OCI index or Docker manifest list.
    Index,
}

/// What the registry needs to know about a manifest to validate, store and index it.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    /// Image or index.
    pub kind: ManifestKind,
    /// The effective media type (the body's `mediaType`, else the request's `Content-Type`).
    pub media_type: String,
    /// The artifact type the referrers API reports: `artifactType`, else the config's media type.
    pub artifact_type: Option<String>,
    /// The config descriptor of an image manifest.
    pub config: Option<Descriptor>,
    /// Blobs that must exist in the repository (config and distributable layers).
    pub blobs: Vec<Descriptor>,
    /// Child manifests that must exist in the repository (index entries).
    pub children: Vec<Descriptor>,
    /// The manifest this one refers to, for the referrers API.
    pub subject: Option<Descriptor>,
    /// Top-level annotations, copied into referrers responses.
    pub annotations: Option<Map<String, Value>>,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not valid JSON, wrong shape, or media type mismatch: `MANIFEST_INVALID`.
    #[error("{0}")]
    Invalid(String),
    /// A manifest type the registry does not store (e.g. Docker schema 1): `MANIFEST_INVALID`.
    #[error("unsupported manifest media type {0:?}")]
    Unsupported(String),
    /// Over [`MAX_MANIFEST_BYTES`]: `SIZE_INVALID`.
    #[error("manifest is {0} bytes, over the 4 MiB limit")]
    TooLarge(usize),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<Map<String, Value>>,
}

/// Strips parameters (`; charset=…`) and whitespace from a `Content-Type`.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Parses and validates a manifest body sent with `content_type`.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(body.len()));
    }
    let raw: RawManifest =
        serde_json::from_slice(body).map_err(|e| ManifestError::Invalid(format!("manifest is not valid JSON: {e}")))?;
    let content_type = content_type.map(essence).filter(|c| !c.is_empty());
    if raw.schema_version != Some(2) {
        if content_type.is_some_and(|c| c.starts_with("application/vnd.docker.distribution.manifest.v1")) {
            return Err(ManifestError::Unsupported(content_type.unwrap_or_default().to_owned()));
        }
        return Err(ManifestError::Invalid("schemaVersion must be 2".into()));
    }
    let media_type = match (&raw.media_type, content_type) {
        (Some(body_type), Some(header)) if body_type != header && is_manifest_media_type(header) => {
            return Err(ManifestError::Invalid(format!(
                "mediaType {body_type:?} does not match Content-Type {header:?}"
            )));
        }
        (Some(body_type), _) => body_type.clone(),
        (None, Some(header)) if is_manifest_media_type(header) => header.to_owned(),
        (None, _) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, _) => OCI_MANIFEST.to_owned(),
    };
    let kind = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => ManifestKind::Image,
        OCI_INDEX | DOCKER_MANIFEST_LIST => ManifestKind::Index,
        other => return Err(ManifestError::Unsupported(other.to_owned())),
    };
    let docker = media_type.starts_with("application/vnd.docker.");
    if docker && (raw.subject.is_some() || raw.artifact_type.is_some()) {
        return Err(ManifestError::Invalid("Docker manifests carry no subject or artifactType".into()));
    }
    match kind {
        ManifestKind::Image => {
            if raw.manifests.is_some() {
                return Err(ManifestError::Invalid("an image manifest has no manifests field".into()));
            }
            let config = raw.config.ok_or_else(|| ManifestError::Invalid("image manifest needs config".into()))?;
            let layers = raw.layers.ok_or_else(|| ManifestError::Invalid("image manifest needs layers".into()))?;
            let artifact_type = raw.artifact_type.clone().or_else(|| Some(config.media_type.clone()));
            let blobs = std::iter::once(config.clone())
                .chain(layers.into_iter().filter(|l| !is_non_distributable(l)))
                .collect();
            Ok(ParsedManifest {
                kind,
                media_type,
                artifact_type,
                config: Some(config),
                blobs,
                children: Vec::new(),
                subject: raw.subject,
                annotations: raw.annotations,
            })
        }
        ManifestKind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(ManifestError::Invalid("an index has no config or layers".into()));
            }
            let children = raw.manifests.ok_or_else(|| ManifestError::Invalid("index needs manifests".into()))?;
            Ok(ParsedManifest {
                kind,
                media_type,
                artifact_type: raw.artifact_type,
                config: None,
                blobs: Vec::new(),
                children,
                subject: raw.subject,
                annotations: raw.annotations,
            })
        }
    }
}

fn is_non_distributable(layer: &Descriptor) -> bool {
    NON_DISTRIBUTABLE.contains(&layer.media_type.as_str()) && layer.urls.as_ref().is_some_and(|u| !u.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    fn image(media_type: Option<&str>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(1), "size": 10},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d(2), "size": 20}],
        });
        if let Some(mt) = media_type {
            v["mediaType"] = mt.into();
        }
        serde_json::to_vec(&v).expect("json")
    }

    #[test]
    fn image_manifest_lists_config_and_layers() {
        let m = parse(&image(Some(OCI_MANIFEST)), Some(OCI_MANIFEST)).expect("valid");
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
    }

    #[test]
    fn media_type_falls_back_to_content_type() {
        let m = parse(&image(None), Some(DOCKER_MANIFEST)).expect("valid");
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        let m = parse(&image(None), None).expect("valid");
        assert_eq!(m.media_type, OCI_MANIFEST);
    }

    #[test]
    fn mismatched_content_type_is_invalid() {
        let err = parse(&image(Some(OCI_MANIFEST)), Some(DOCKER_MANIFEST)).expect_err("mismatch");
        assert!(matches!(err, ManifestError::Invalid(_)));
    }

    #[test]
    fn index_lists_children_and_subject() {
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": "application/x-sig",
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": d(3), "size": 5, "platform": {"os": "linux", "architecture": "amd64"}}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": d(4), "size": 6},
        });
        let m = parse(&serde_json::to_vec(&body).expect("json"), Some(OCI_INDEX)).expect("valid");
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.children.len(), 1);
        assert_eq!(m.subject.map(|s| s.digest.to_string()), Some(d(4)));
    }

    #[test]
    fn rejects_garbage_and_schema1() {
        assert!(matches!(parse(b"{", None), Err(ManifestError::Invalid(_))));
        assert!(matches!(parse(b"[]", None), Err(ManifestError::Invalid(_))));
        let schema1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert!(parse(schema1, Some("application/vnd.docker.distribution.manifest.v1+prettyjws")).is_err());
        let bad_digest =
            br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:xyz","size":1},"layers":[]}"#;
        assert!(matches!(parse(bad_digest, None), Err(ManifestError::Invalid(_))));
    }

    #[test]
    fn foreign_layers_need_not_be_present() {
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": d(1), "size": 1},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": d(2), "size": 1, "urls": ["https://example.invalid/x"]}],
        });
        let m = parse(&serde_json::to_vec(&body).expect("json"), Some(DOCKER_MANIFEST)).expect("valid");
        assert_eq!(m.blobs.len(), 1);
    }

    #[test]
    fn oversized_is_rejected() {
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(matches!(parse(&big, None), Err(ManifestError::TooLarge(_))));
    }
}
