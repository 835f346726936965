//! S3 backend (aws-sdk-s3; any S3-compatible service). Uploads go to a multipart upload at a
//! per-upload temporary key, up to [`PARTS_IN_FLIGHT`] parts uploading while the next buffers,
//! so memory stays at a few parts whatever the blob size; the verified object is then copied to its
//! content-addressed key. Pulls are served by presigned GET URLs or streamed with ranges.

use std::collections::VecDeque;
use std::time::Duration;

use aerugo_oci::Digest;
use aerugo_oci::range::ReadRange;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::{BlobStore, ByteStream, Error, Part, Result, UploadState, UploadWriter, blob_key};

/// S3's minimum size of every multipart part but the last.
pub const MIN_PART_SIZE: usize = 5 << 20;
/// Parts uploaded concurrently per request: enough to hide one part's round trip, few enough to
/// bound memory (three parts of 5 MiB, with the buffer).
pub const PARTS_IN_FLIGHT: usize = 2;
/// Largest object S3 copies in one CopyObject call.
const MAX_SINGLE_COPY: u64 = 5 << 30;
/// Range size of each UploadPartCopy when copying larger objects.
const COPY_PART_SIZE: u64 = 1 << 30;

/// Connection settings of the S3 backend.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint URL (`http://127.0.0.1:3900`); `None` for AWS's regional endpoints.
    pub endpoint: Option<String>,
    /// Bucket holding blobs.
    pub bucket: String,
    /// Region name used for signing.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most self-hosted services.
    pub path_style: bool,
}

/// Blobs in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

fn s3_error<E>(operation: &'static str, err: SdkError<E>) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    Error::S3 { operation, message: DisplayErrorContext(&err).to_string() }
}

fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    let status_404 = err.raw_response().is_some_and(|r| r.status().as_u16() == 404);
    status_404 || err.as_service_error().and_then(|e| e.code()).is_some_and(|c| c == "NoSuchKey" || c == "NotFound")
}

/// Size of part number `index` (0-based): the minimum for the first thousand parts, then
/// growing so S3's 10,000-part limit allows blobs of a few hundred GiB.
fn part_size(index: usize) -> usize {
    MIN_PART_SIZE * (1 + index / 1000)
}

fn upload_key(id: Uuid) -> String {
    format!("uploads/{}/data", id.simple())
}

/// The S3 secret access key: the contents of `file` (trimmed), else the variable
/// `AERUGO_S3_SECRET_ACCESS_KEY`; never a flag value. `None` when neither is set.
pub fn secret_access_key(file: Option<&std::path::Path>) -> std::io::Result<Option<String>> {
    match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| Some(s.trim().to_owned()))
            .map_err(|e| std::io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))),
        None => Ok(std::env::var("AERUGO_S3_SECRET_ACCESS_KEY").ok()),
    }
}

impl S3Store {
    /// The same service and credentials, another bucket.
    pub fn in_bucket(&self, bucket: &str) -> Self {
        S3Store { client: self.client.clone(), bucket: bucket.to_owned() }
    }

    /// A store using `config`. No request is made until first use.
    pub fn new(config: &S3Config) -> Self {
        let credentials =
            Credentials::new(&config.access_key_id, &config.secret_access_key, None, None, "aerugo-config");
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(config.path_style)
            // Flexible checksums are not implemented by every S3-compatible service; blobs are
            // verified by their SHA-256 digest anyway.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(3)).build());
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        S3Store { client: Client::from_conf(builder.build()), bucket: config.bucket.clone() }
    }

    /// Creates the bucket if it does not exist yet.
    pub async fn ensure_bucket(&self) -> Result<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => {
                self.client
                    .create_bucket()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .map_err(|e| s3_error("CreateBucket", e))?;
                Ok(())
            }
            Err(e) => Err(s3_error("HeadBucket", e)),
        }
    }

    /// Makes sure a lifecycle rule aborts multipart uploads left incomplete for `days` (an
    /// abandoned upload's parts otherwise cost storage forever). Other rules are kept. Returns
    /// whether the configuration was written.
    pub async fn ensure_abort_incomplete_uploads(&self, days: i32) -> Result<bool> {
        use aws_sdk_s3::types::{
            AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus, LifecycleRule,
            LifecycleRuleFilter,
        };
        const RULE: &str = "aerugo-abort-incomplete-uploads";
        let mut rules: Vec<LifecycleRule> =
            match self.client.get_bucket_lifecycle_configuration().bucket(&self.bucket).send().await {
                Ok(out) => out.rules().to_vec(),
                Err(e)
                    if e.as_service_error().and_then(ProvideErrorMetadata::code)
                        == Some("NoSuchLifecycleConfiguration")
                        || is_not_found(&e) =>
                {
                    Vec::new()
                }
                Err(e) => return Err(s3_error("GetBucketLifecycleConfiguration", e)),
            };
        let current = rules.iter().any(|r| {
            r.id() == Some(RULE)
                && r.status() == &ExpirationStatus::Enabled
                && r.abort_incomplete_multipart_upload().and_then(|a| a.days_after_initiation()) == Some(days)
        });
        if current {
            return Ok(false);
        }
        rules.retain(|r| r.id() != Some(RULE));
        let rule = LifecycleRule::builder()
            .id(RULE)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder().days_after_initiation(days).build(),
            )
            .build()
            .map_err(|e| Error::S3 { operation: "PutBucketLifecycleConfiguration", message: e.to_string() })?;
        rules.push(rule);
        let config = BucketLifecycleConfiguration::builder()
            .set_rules(Some(rules))
            .build()
            .map_err(|e| Error::S3 { operation: "PutBucketLifecycleConfiguration", message: e.to_string() })?;
        self.client
            .put_bucket_lifecycle_configuration()
            .bucket(&self.bucket)
            .lifecycle_configuration(config)
            .send()
            .await
            .map_err(|e| s3_error("PutBucketLifecycleConfiguration", e))?;
        Ok(true)
    }

    /// The bucket policy document, if the bucket has one.
    pub async fn policy(&self) -> Result<Option<String>> {
        match self.client.get_bucket_policy().bucket(&self.bucket).send().await {
            Ok(out) => Ok(out.policy().map(str::to_owned)),
            Err(e)
                if e.as_service_error().and_then(ProvideErrorMetadata::code) == Some("NoSuchBucketPolicy")
                    || is_not_found(&e) =>
            {
                Ok(None)
            }
            Err(e) => Err(s3_error("GetBucketPolicy", e)),
        }
    }

    /// Sets the bucket policy document.
    pub async fn put_policy(&self, document: &str) -> Result<()> {
        self.client
            .put_bucket_policy()
            .bucket(&self.bucket)
            .policy(document)
            .send()
            .await
            .map_err(|e| s3_error("PutBucketPolicy", e))?;
        Ok(())
    }

    /// Keys of the objects under `prefix` (consistency scans and tests).
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("ListObjectsV2", e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        }
        Ok(keys)
    }

    /// Keys of multipart uploads begun and neither completed nor aborted.
    pub async fn multipart_uploads(&self) -> Result<Vec<String>> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| s3_error("ListMultipartUploads", e))?;
        Ok(out.uploads().iter().filter_map(|u| u.key().map(str::to_owned)).collect())
    }

    async fn copy(&self, from: &str, to: &str, size: u64) -> Result<()> {
        let source = format!("{}/{}", self.bucket, from);
        if size <= MAX_SINGLE_COPY {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(&source)
                .send()
                .await
                .map_err(|e| s3_error("CopyObject", e))?;
            return Ok(());
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(to)
            .send()
            .await
            .map_err(|e| s3_error("CreateMultipartUpload", e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let mut parts = Vec::new();
        let mut start = 0u64;
        while start < size {
            let end = (start + COPY_PART_SIZE).min(size) - 1;
            let number = i32::try_from(parts.len() + 1).map_err(|_| Error::CorruptState("too many parts".into()))?;
            let out = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(to)
                .upload_id(&upload_id)
                .part_number(number)
                .copy_source(&source)
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await
                .map_err(|e| s3_error("UploadPartCopy", e))?;
            let etag = out.copy_part_result().and_then(|r| r.e_tag()).unwrap_or_default().to_owned();
            parts.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
            start = end + 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(to)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| s3_error("CompleteMultipartUpload", e))?;
        Ok(())
    }
}

impl S3Store {
    /// Aborts the multipart upload (if any) at `key` and deletes whatever object sits there.
    async fn abort_upload_key(&self, key: &str, multipart_id: Option<&str>) -> Result<()> {
        if let Some(upload_id) = multipart_id {
            let aborted =
                self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(upload_id).send().await;
            match aborted {
                Err(e) if !is_not_found(&e) && e.as_service_error().and_then(|s| s.code()) != Some("NoSuchUpload") => {
                    return Err(s3_error("AbortMultipartUpload", e));
                }
                _ => {}
            }
        }
        self.delete(key).await
    }
}

/// One request's worth of an S3 upload: a buffer below the part size and at most
/// [`PARTS_IN_FLIGHT`] parts uploading, oldest first.
pub struct S3Writer {
    client: Client,
    bucket: String,
    key: String,
    state: UploadState,
    buffer: BytesMut,
    in_flight: VecDeque<JoinHandle<Result<Part>>>,
}

impl S3Writer {
    /// Waits for the oldest part in flight, recording it in order.
    async fn settle_one(&mut self) -> Result<()> {
        if let Some(task) = self.in_flight.pop_front() {
            let part = task.await.map_err(|e| Error::S3 { operation: "UploadPart", message: e.to_string() })??;
            self.state.written += part.size;
            self.state.parts.push(part);
        }
        Ok(())
    }

    /// Waits for every part in flight.
    async fn settle(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        Ok(())
    }

    async fn upload_id(&mut self) -> Result<String> {
        if let Some(id) = &self.state.multipart_id {
            return Ok(id.clone());
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/octet-stream")
            .send()
            .await
            .map_err(|e| s3_error("CreateMultipartUpload", e))?;
        let id = created
            .upload_id()
            .ok_or_else(|| Error::S3 { operation: "CreateMultipartUpload", message: "no upload id".into() })?
            .to_owned();
        self.state.multipart_id = Some(id.clone());
        Ok(id)
    }

    /// Starts uploading `data` as the next part once fewer than [`PARTS_IN_FLIGHT`] are.
    async fn send_part(&mut self, data: Bytes) -> Result<()> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.settle_one().await?;
        }
        let upload_id = self.upload_id().await?;
        let number = i32::try_from(self.state.parts.len() + self.in_flight.len() + 1)
            .map_err(|_| Error::CorruptState("too many parts".into()))?;
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        self.in_flight.push_back(tokio::spawn(async move {
            let size = data.len() as u64;
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(S3Body::from(data))
                .send()
                .await
                .map_err(|e| s3_error("UploadPart", e))?;
            Ok(Part { number, etag: out.e_tag().unwrap_or_default().to_owned(), size })
        }));
        Ok(())
    }

    fn next_part_size(&self) -> usize {
        part_size(self.state.parts.len() + self.in_flight.len())
    }
}

impl UploadWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buffer.extend_from_slice(&chunk);
        while self.buffer.len() >= self.next_part_size() {
            let part = self.buffer.split_to(self.next_part_size()).freeze();
            self.send_part(part).await?;
        }
        Ok(())
    }

    async fn pause(mut self) -> Result<(UploadState, Vec<u8>)> {
        self.settle().await?;
        Ok((self.state, self.buffer.to_vec()))
    }
}

impl BlobStore for S3Store {
    type Writer = S3Writer;

    async fn resume_upload(&self, id: Uuid, state: UploadState, pending: Vec<u8>) -> Result<S3Writer> {
        let mut buffer = BytesMut::with_capacity(MIN_PART_SIZE.max(pending.len()));
        buffer.extend_from_slice(&pending);
        Ok(S3Writer {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: upload_key(id),
            state,
            buffer,
            in_flight: VecDeque::new(),
        })
    }

    async fn complete_upload(&self, mut writer: S3Writer, digest: &Digest) -> Result<String> {
        writer.settle().await?;
        let key = blob_key(digest);
        if self.size(&key).await?.is_some() {
            // Content-addressed: the stored copy already holds these bytes; never overwrite it.
            self.abort_upload_key(&writer.key, writer.state.multipart_id.as_deref()).await?;
            return Ok(key);
        }
        let Some(upload_id) = writer.state.multipart_id.clone() else {
            // Below one part: a single PUT straight to the content-addressed key.
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type("application/octet-stream")
                .body(S3Body::from(writer.buffer.freeze()))
                .send()
                .await
                .map_err(|e| s3_error("PutObject", e))?;
            return Ok(key);
        };
        if !writer.buffer.is_empty() {
            let last = std::mem::take(&mut writer.buffer).freeze();
            writer.send_part(last).await?;
            writer.settle().await?;
        }
        let parts = writer
            .state
            .parts
            .iter()
            .map(|p| CompletedPart::builder().part_number(p.number).e_tag(&p.etag).build())
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&writer.key)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| s3_error("CompleteMultipartUpload", e))?;
        self.copy(&writer.key, &key, writer.state.written).await?;
        self.delete(&writer.key).await?;
        Ok(key)
    }

    async fn abort_upload(&self, id: Uuid, state: &UploadState) -> Result<()> {
        let key = upload_key(id);
        if let Some(upload_id) = &state.multipart_id {
            let aborted =
                self.client.abort_multipart_upload().bucket(&self.bucket).key(&key).upload_id(upload_id).send().await;
            match aborted {
                Err(e) if !is_not_found(&e) && e.as_service_error().and_then(|s| s.code()) != Some("NoSuchUpload") => {
                    return Err(s3_error("AbortMultipartUpload", e));
                }
                _ => {}
            }
        }
        self.delete(&key).await
    }

    async fn read(&self, key: &str, range: Option<ReadRange>) -> Result<ByteStream> {
        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(r) = range {
            request = request.range(format!("bytes={}-{}", r.start, r.end));
        }
        let out = match request.send().await {
            Err(e) if is_not_found(&e) => return Err(Error::NotFound(key.to_owned())),
            other => other.map_err(|e| s3_error("GetObject", e))?,
        };
        let stream = futures_util::stream::unfold(out.body, |mut body| async move {
            body.next().await.map(|item| (item.map_err(std::io::Error::other), body))
        });
        Ok(Box::pin(stream))
    }

    async fn presign(&self, key: &str, ttl: Duration) -> Result<Option<String>> {
        let config = PresigningConfig::expires_in(ttl)
            .map_err(|e| Error::S3 { operation: "presign", message: e.to_string() })?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| s3_error("presign GetObject", e))?;
        Ok(Some(request.uri().to_owned()))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(s3_error("HeadObject", e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.client.delete_object().bucket(&self.bucket).key(key).send().await {
            Err(e) if !is_not_found(&e) => Err(s3_error("DeleteObject", e)),
            _ => Ok(()),
        }
    }

    async fn delete_many(&self, keys: &[String]) -> Result<Vec<String>> {
        use futures_util::StreamExt as _;
        // Up to four requests in flight: a service answers one DeleteObjects key by key.
        let calls = futures_util::stream::iter(keys.chunks(crate::DELETE_BATCH).map(|batch| async move {
            let objects = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::S3 { operation: "DeleteObjects", message: e.to_string() })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| Error::S3 { operation: "DeleteObjects", message: e.to_string() })?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| s3_error("DeleteObjects", e))?;
            // Quiet mode lists only the failures; a missing key is not one.
            Ok::<_, Error>(
                out.errors()
                    .iter()
                    .filter(|e| e.code() != Some("NoSuchKey"))
                    .filter_map(|e| e.key().map(str::to_owned))
                    .collect::<Vec<_>>(),
            )
        }))
        .buffer_unordered(4);
        let results: Vec<Result<Vec<String>>> = calls.collect().await;
        let mut failed = Vec::new();
        for result in results {
            failed.extend(result?);
        }
        Ok(failed)
    }

    async fn check(&self) -> Result<()> {
        self.client.head_bucket().bucket(&self.bucket).send().await.map_err(|e| s3_error("HeadBucket", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_respect_the_minimum_and_reach_large_blobs() {
        assert_eq!(part_size(0), MIN_PART_SIZE);
        assert_eq!(part_size(999), MIN_PART_SIZE);
        assert_eq!(part_size(1000), 2 * MIN_PART_SIZE);
        let max: u64 = (0..10_000).map(|i| part_size(i) as u64).sum();
        assert!(max > 250 << 30, "10,000 parts hold {max} bytes");
    }
}
