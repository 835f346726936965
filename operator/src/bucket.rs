//! The registry's bucket: created when missing, with a lifecycle rule that aborts multipart
//! uploads left incomplete for a day, and the declared bucket policy. `desired_policy` is pure;
//! `sync` talks to S3 (through `aerugo-storage`).

use aerugo_crds::registry::{BucketPolicy, RegistryStorage};
use aerugo_storage::{S3Config, S3Store};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Days after which an incomplete multipart upload is aborted by the bucket itself.
pub const ABORT_INCOMPLETE_AFTER_DAYS: i32 = 1;

/// The mark of the statements the operator writes: their `Sid` starts with it. A policy with
/// any other statement was written by someone else and is never overwritten.
pub const STATEMENT_MARK: &str = "Aerugo";

/// Whether every statement of the policy document `policy` is one the operator writes.
pub fn written_by_operator(policy: &Value) -> bool {
    let statements = match &policy["Statement"] {
        Value::Array(statements) => statements.as_slice(),
        single @ Value::Object(_) => std::slice::from_ref(single),
        _ => return false,
    };
    statements.iter().all(|s| s["Sid"].as_str().is_some_and(|sid| sid.starts_with(STATEMENT_MARK)))
}

/// The policy document for `bucket`; every statement carries [`STATEMENT_MARK`].
pub fn desired_policy(bucket: &str, policy: &BucketPolicy) -> Value {
    let objects = format!("arn:aws:s3:::{bucket}/*");
    let whole = format!("arn:aws:s3:::{bucket}");
    let mut statements = vec![
        json!({
            "Sid": "AerugoRegistryObjects",
            "Effect": "Allow",
            "Principal": { "AWS": [policy.principal] },
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
            "Resource": [objects],
        }),
        json!({
            "Sid": "AerugoRegistryBucket",
            "Effect": "Allow",
            "Principal": { "AWS": [policy.principal] },
            "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"],
            "Resource": [whole],
        }),
    ];
    if !policy.readers.is_empty() {
        statements.push(json!({
            "Sid": "AerugoReaders",
            "Effect": "Allow",
            "Principal": { "AWS": policy.readers },
            "Action": ["s3:GetObject"],
            "Resource": [objects],
        }));
    }
    if policy.deny_insecure_transport {
        statements.push(json!({
            "Sid": "AerugoDenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [whole, objects],
            "Condition": { "Bool": { "aws:SecureTransport": "false" } },
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// What the bucket sync changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BucketChanges {
    /// The lifecycle configuration was written.
    pub lifecycle: bool,
    /// The policy was written.
    pub policy: bool,
}

/// Creates the bucket if needed and keeps its lifecycle rule and policy.
pub async fn sync(storage: &RegistryStorage, access_key_id: &str, secret_access_key: &str) -> Result<BucketChanges> {
    let unavailable =
        |e: aerugo_storage::Error| Error::Waiting { reason: "StorageUnavailable", message: e.to_string() };
    let store = S3Store::new(&S3Config {
        endpoint: Some(storage.endpoint.clone()),
        bucket: storage.bucket.clone(),
        region: storage.region.clone().unwrap_or_else(|| "us-east-1".into()),
        access_key_id: access_key_id.to_owned(),
        secret_access_key: secret_access_key.to_owned(),
        path_style: storage.path_style,
    });
    store.ensure_bucket().await.map_err(unavailable)?;
    let lifecycle = store.ensure_abort_incomplete_uploads(ABORT_INCOMPLETE_AFTER_DAYS).await.map_err(unavailable)?;
    let mut policy = false;
    if let Some(declared) = &storage.policy {
        let desired = desired_policy(&storage.bucket, declared);
        let current = store.policy().await.map_err(unavailable)?;
        let current = match current {
            None => None,
            Some(text) => match serde_json::from_str::<Value>(&text) {
                Ok(doc) if written_by_operator(&doc) => Some(doc),
                _ => {
                    return Err(Error::Waiting {
                        reason: "BucketPolicyConflict",
                        message: format!(
                            "bucket {:?} has a policy the operator did not write (a statement whose Sid does not start with {STATEMENT_MARK:?}): it is left as it is; remove it, or the declared policy, to go on",
                            storage.bucket
                        ),
                    });
                }
            },
        };
        if current.as_ref() != Some(&desired) {
            store.put_policy(&desired.to_string()).await.map_err(unavailable)?;
            policy = true;
        }
    }
    Ok(BucketChanges { lifecycle, policy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_grant_the_registry_and_readers_and_can_require_tls() {
        let policy = BucketPolicy {
            principal: "arn:aws:iam::1:user/registry".into(),
            readers: vec![],
            deny_insecure_transport: false,
        };
        let doc = desired_policy("blobs", &policy);
        let statements = doc["Statement"].as_array().expect("statements");
        assert_eq!(statements.len(), 2);
        assert_eq!(statements[0]["Resource"][0], "arn:aws:s3:::blobs/*");
        assert_eq!(statements[1]["Resource"][0], "arn:aws:s3:::blobs");
        let strict =
            BucketPolicy { readers: vec!["arn:aws:iam::2:root".into()], deny_insecure_transport: true, ..policy };
        let doc = desired_policy("blobs", &strict);
        let statements = doc["Statement"].as_array().expect("statements");
        assert_eq!(statements.len(), 4);
        assert_eq!(statements[2]["Principal"]["AWS"][0], "arn:aws:iam::2:root");
        assert_eq!(statements[3]["Effect"], "Deny");
        assert_eq!(statements[3]["Condition"]["Bool"]["aws:SecureTransport"], "false");
        assert!(written_by_operator(&doc), "every statement the operator writes carries its mark");
    }

    #[test]
    fn a_policy_with_any_foreign_statement_is_not_the_operators() {
        let ours = json!({ "Sid": "AerugoReaders", "Effect": "Allow" });
        let theirs = json!({ "Sid": "TeamBackups", "Effect": "Allow" });
        let unnamed = json!({ "Effect": "Allow" });
        assert!(written_by_operator(&json!({ "Statement": [ours] })));
        assert!(written_by_operator(&json!({ "Statement": ours })));
        assert!(!written_by_operator(&json!({ "Statement": [ours, theirs] })));
        assert!(!written_by_operator(&json!({ "Statement": [unnamed] })));
        assert!(!written_by_operator(&json!({ "Version": "2012-10-17" })));
    }
}
