//! `aerugo-dataplane fsck`: checks that every tag → manifest → blob chain resolves — each
//! blob a manifest references is linked in its repository, each link has an object in the
//! repository's storage location, and each recorded object is in storage with the blob's size —
//! and, with `repair`, fixes what can be fixed without losing anything a manifest still needs:
//! a missing or corrupt object is forgotten (and a corrupt one deleted) so that the next push
//! of the blob stores it again, links nothing references are removed, a blob a manifest
//! references is linked back when its object is there, and bare blob rows are dropped. What
//! stays broken (a manifest whose blob is gone) is reported with what to push again.
//! Tags and manifest references are kept consistent by foreign keys and are not scanned.

use aerugo_db::{Pool, fsck, notify};
use aerugo_storage::{AnyStore, BlobStore as _};

use crate::error::Result;

/// One inconsistency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A recorded object is not in storage.
    ObjectMissing {
        /// Blob digest.
        digest: String,
        /// Storage location (`""`: the registry's store).
        location: String,
    },
    /// A recorded object has another size than its blob.
    ObjectCorrupt {
        /// Blob digest.
        digest: String,
        /// Storage location.
        location: String,
        /// The blob's size.
        expected: i64,
        /// The object's size.
        found: u64,
    },
    /// A repository links a blob its location has no object of.
    LinkWithoutObject {
        /// Repository.
        repository: String,
        /// Blob digest.
        digest: String,
        /// A manifest of the repository references it: push the blob again.
        referenced: bool,
    },
    /// A manifest references a blob its repository does not link.
    ManifestBlobNotLinked {
        /// Repository.
        repository: String,
        /// Manifest digest.
        manifest: String,
        /// Blob digest.
        digest: String,
    },
    /// A blob row with no object that nothing uses.
    BareBlob {
        /// Blob digest.
        digest: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |l: &str| if l.is_empty() { "the registry's store".to_owned() } else { format!("bucket {l}") };
        match self {
            Problem::ObjectMissing { digest, location } => {
                write!(f, "object of {digest} missing from {}", at(location))
            }
            Problem::ObjectCorrupt { digest, location, expected, found } => {
                write!(f, "object of {digest} in {} has {found} bytes, not {expected}", at(location))
            }
            Problem::LinkWithoutObject { repository, digest, referenced: true } => {
                write!(f, "{repository}: {digest} is referenced by a manifest but has no object: push it again")
            }
            Problem::LinkWithoutObject { repository, digest, referenced: false } => {
                write!(f, "{repository}: link to {digest} has no object")
            }
            Problem::ManifestBlobNotLinked { repository, manifest, digest } => {
                write!(f, "{repository}: manifest {manifest} references {digest}, which the repository does not link")
            }
            Problem::BareBlob { digest } => write!(f, "blob row {digest} has no object and no use"),
        }
    }
}

/// What a scan found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Objects checked in storage.
    pub objects_checked: usize,
    /// Problems found (before repairs).
    pub problems: Vec<Problem>,
    /// Repairs made.
    pub repaired: usize,
}

/// Scans (and with `repair`, fixes) the registry on `db` whose blobs are in `store`. With
/// `check_storage` false, recorded objects are not looked up in storage.
pub async fn fsck(db: &Pool, store: &AnyStore, check_storage: bool, repair: bool) -> Result<Report> {
    let mut report = Report::default();
    let client = db.get().await.map_err(aerugo_db::Error::from)?;
    if check_storage {
        let mut after: Option<(String, String)> = None;
        loop {
            let page = fsck::objects(&client, after.as_ref().map(|(d, l)| (d.as_str(), l.as_str())), 500).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.digest.clone(), last.location.clone()));
            for object in &page {
                report.objects_checked += 1;
                let location = store.location(&object.location).await?;
                let found = location.size(&object.storage_key).await?;
                let problem = match found {
                    None => Problem::ObjectMissing { digest: object.digest.clone(), location: object.location.clone() },
                    Some(n) if i64::try_from(n).ok() != Some(object.size) => Problem::ObjectCorrupt {
                        digest: object.digest.clone(),
                        location: object.location.clone(),
                        expected: object.size,
                        found: n,
                    },
                    Some(_) => continue,
                };
                if repair {
                    if matches!(problem, Problem::ObjectCorrupt { .. }) {
                        location.delete(&object.storage_key).await?;
                    }
                    if fsck::forget_object(&client, &object.digest, &object.location).await? {
                        report.repaired += 1;
                        // Any repository linking the digest may have it cached as present.
                        notify::announce(&client, notify::Change::Everything("fsck")).await?;
                    }
                }
                report.problems.push(problem);
            }
        }
    }
    for (repository, digest, _, referenced) in fsck::links_without_object(&client).await? {
        if repair && !referenced && fsck::unlink_unreferenced(&client, &repository, &digest).await? {
            report.repaired += 1;
            notify::announce(&client, notify::Change::Repository(&repository)).await?;
        }
        report.problems.push(Problem::LinkWithoutObject { repository, digest, referenced });
    }
    for (repository, manifest, digest, object_there) in fsck::manifest_blobs_not_linked(&client).await? {
        if repair && object_there {
            report.repaired += usize::from(fsck::relink(&client, &repository, &digest).await?);
        }
        report.problems.push(Problem::ManifestBlobNotLinked { repository, manifest, digest });
    }
    for digest in fsck::bare_blobs(&client).await? {
        if repair {
            report.repaired += usize::from(fsck::drop_bare_blob(&client, &digest).await?);
        }
        report.problems.push(Problem::BareBlob { digest });
    }
    Ok(report)
}
