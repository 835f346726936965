//! Leader election through a `coordination.k8s.io/v1` Lease: one operator replica reconciles;
//! the others wait to take over when the holder stops renewing.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

/// How long a lease holds without renewal.
const LEASE_SECONDS: i32 = 15;

/// A held lease.
pub struct Leadership {
    api: Api<Lease>,
    name: String,
    identity: String,
}

fn expired(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    match &spec.renew_time {
        Some(MicroTime(renewed)) => renewed.as_second() + duration < now.as_second(),
        None => true,
    }
}

impl Leadership {
    /// Waits until this process holds Lease `name` in `namespace`.
    pub async fn acquire(client: Client, namespace: &str, name: &str, identity: &str) -> Result<Self, kube::Error> {
        let api: Api<Lease> = Api::namespaced(client, namespace);
        loop {
            let now = Timestamp::now();
            let spec = json!({
                "holderIdentity": identity,
                "leaseDurationSeconds": LEASE_SECONDS,
                "acquireTime": MicroTime(now),
                "renewTime": MicroTime(now),
            });
            match api.get_opt(name).await? {
                None => {
                    let lease: Lease = serde_json::from_value(json!({ "metadata": { "name": name }, "spec": spec }))
                        .map_err(kube::Error::SerdeError)?;
                    match api.create(&PostParams::default(), &lease).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
                Some(mut lease) => {
                    let held_by_me = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(identity);
                    if held_by_me || expired(&lease, now) {
                        lease.spec = Some(serde_json::from_value(spec).map_err(kube::Error::SerdeError)?);
                        match api.replace(name, &PostParams::default(), &lease).await {
                            Ok(_) => break,
                            Err(kube::Error::Api(s)) if s.code == 409 => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        tracing::info!(lease = name, identity, "leading");
        Ok(Leadership { api, name: name.to_owned(), identity: identity.to_owned() })
    }

    /// Renews the lease until it is lost (another holder, or the API unreachable for longer
    /// than the lease); returns then, and the caller must stop reconciling.
    pub async fn hold(self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(u64::try_from(LEASE_SECONDS / 3).unwrap_or(5))).await;
            match self.api.get(&self.name).await {
                Ok(mut lease) => {
                    if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) != Some(self.identity.as_str()) {
                        tracing::error!(lease = %self.name, "leadership lost to another holder");
                        return;
                    }
                    if let Some(spec) = lease.spec.as_mut() {
                        spec.renew_time = Some(MicroTime(Timestamp::now()));
                    }
                    if self.api.replace(&self.name, &PostParams::default(), &lease).await.is_ok() {
                        last_renewal = tokio::time::Instant::now();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not renew the lease"),
            }
            if last_renewal.elapsed() > Duration::from_secs(u64::try_from(LEASE_SECONDS).unwrap_or(15)) {
                tracing::error!(lease = %self.name, "leadership lost: the lease expired");
                return;
            }
        }
    }
}
