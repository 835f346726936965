//! The operator's errors, sorted the way the error policy needs them: an invalid spec waits for
//! the object to change; everything else is transient and retried with backoff.

/// A reconcile failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object's spec cannot be reconciled as written (`Ready=False`, `InvalidSpec`).
    #[error("{0}")]
    InvalidSpec(String),
    /// Something this object depends on is not there or not ready yet (retried).
    #[error("{reason}: {message}")]
    Waiting {
        /// The condition reason (`OrganizationNotReady`, …).
        reason: &'static str,
        /// What it waits for.
        message: String,
    },
    /// The registry database failed.
    #[error("database: {0}")]
    Database(#[from] aerugo_db::Error),
    /// The Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Files could not be read or written (file mode).
    #[error("{0}")]
    Io(String),
    /// The finalizer helper failed around a reconcile.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// The `Ready=False` reason this error is reported with.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Waiting { reason, .. } => reason,
            Error::Database(_) => "DatabaseUnavailable",
            Error::Kube(_) => "KubernetesApiError",
            Error::Io(_) => "IoError",
            Error::Finalizer(_) => "FinalizerError",
        }
    }

    /// Whether retrying without a spec change can help.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Error::InvalidSpec(_))
    }
}

/// Results of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;
