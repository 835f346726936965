//! TLS to Postgres as libpq describes it: `sslmode` (`disable`, `prefer` — the default —,
//! `require`, `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file, or `system` for the
//! machine's roots) in the database URL, with rustls. Every connection of both binaries — the
//! pool, migrations, the `LISTEN` connection — is made here.
//!
//! As in libpq, `prefer` and `require` encrypt without authenticating the server (unless
//! `sslrootcert` is given with `require`, which then checks the chain as `verify-ca` does);
//! `verify-ca` checks the chain but not the host name; `verify-full` checks both. Without
//! `sslrootcert`, the `verify-*` modes use the system's roots.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{Error, Result};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, unauthenticated; else plain.
    #[default]
    Prefer,
    /// TLS or fail; the server is not authenticated (unless a root certificate is given).
    Require,
    /// TLS with the server's chain checked against the roots.
    VerifyCa,
    /// TLS with the chain and the host name checked.
    VerifyFull,
}

impl std::str::FromStr for SslMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's `allow` (plain first, TLS if the server insists) has no equivalent here.
            other => {
                return Err(Error::Tls(format!(
                    "sslmode {other:?}: disable, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }
}

/// Where the roots for checking the server come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The system's trust store.
    System,
    /// A PEM file of one or more certificates.
    File(std::path::PathBuf),
}

/// A database URL taken apart: what tokio-postgres parses, and the TLS settings it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL without `sslmode` and `sslrootcert`.
    pub url: String,
    /// The TLS mode.
    pub mode: SslMode,
    /// `sslrootcert`, if given.
    pub root_cert: Option<RootCerts>,
}

/// Splits the TLS settings off `url` (`postgres://…?sslmode=…&sslrootcert=…`, or the
/// `key=value` form).
pub fn split(url: &str) -> Result<Target> {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: &str| -> Result<bool> {
        match key {
            "sslmode" => mode = Some(value.parse()?),
            "sslrootcert" if value == "system" => root = Some(RootCerts::System),
            "sslrootcert" => root = Some(RootCerts::File(value.into())),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = url::form_urlencoded::Serializer::new(String::new());
                for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
                    if !take(&key, &value)? {
                        kept.append_pair(&key, &value);
                    }
                }
                let kept = kept.finish();
                if kept.is_empty() { base.to_owned() } else { format!("{base}?{kept}") }
            }
        }
    } else {
        let mut kept = Vec::new();
        for pair in url.split_whitespace() {
            match pair.split_once('=') {
                Some((key, value)) if take(key.trim(), value.trim().trim_matches('\''))? => {}
                _ => kept.push(pair),
            }
        }
        kept.join(" ")
    };
    Ok(Target { url: rest, mode: mode.unwrap_or_default(), root_cert: root })
}

/// The tokio-postgres configuration and TLS connector for `url`.
pub fn connection(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect)> {
    let target = split(url)?;
    let mut config: tokio_postgres::Config = target.url.parse().map_err(Error::Config)?;
    config.ssl_mode(match target.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
    });
    Ok((config, MakeRustlsConnect::new(client_config(&target)?)))
}

/// A session's connection, to be driven by the caller.
pub type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

/// Connects one session to `url` (migrations, `LISTEN`, tests); the caller drives the
/// returned connection.
pub async fn connect(url: &str) -> Result<(tokio_postgres::Client, Connection)> {
    let (config, tls) = connection(url)?;
    Ok(config.connect(tls).await?)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client_config(target: &Target) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let checks_chain = match target.mode {
        SslMode::VerifyCa | SslMode::VerifyFull => true,
        SslMode::Require => target.root_cert.is_some(),
        SslMode::Disable | SslMode::Prefer => false,
    };
    let chain = if checks_chain {
        let roots = roots(target.root_cert.as_ref().unwrap_or(&RootCerts::System))?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
        Some(webpki)
    } else {
        None
    };
    let verifier: Arc<dyn ServerCertVerifier> = match chain {
        Some(webpki) if target.mode == SslMode::VerifyFull => webpki,
        chain => Arc::new(Lenient { chain, provider }),
    };
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

fn roots(source: &RootCerts) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match source {
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::Tls("sslrootcert: the system has no root certificates; name a PEM file".into()));
            }
        }
        RootCerts::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| Error::Tls(format!("sslrootcert {}: {e}", path.display())))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::Tls(format!("sslrootcert {}: no certificate in it", path.display())));
            }
        }
    }
    Ok(store)
}

/// The modes that check less than `verify-full`: `verify-ca` (`chain`: the chain must lead to a
/// root, the name in the certificate is not checked) and `prefer`/`require` without roots (no
/// `chain`: encrypted, the server not authenticated — libpq's meaning of them). The handshake's
/// signatures are always checked.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        // webpki checks the chain first and the name last: a name error means the chain held.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_split_off_both_url_forms() {
        let t = split("postgres://u:p@db:5432/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem")
            .expect("valid");
        assert_eq!(t.url, "postgres://u:p@db:5432/app?application_name=x");
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.root_cert, Some(RootCerts::File("/etc/ca.pem".into())));
        let t = split("host=db dbname=app sslmode=require sslrootcert=system").expect("valid");
        assert_eq!(
            (t.url.as_str(), t.mode, t.root_cert),
            ("host=db dbname=app", SslMode::Require, Some(RootCerts::System))
        );
        let t = split("postgres://db/app").expect("valid");
        assert_eq!((t.url.as_str(), t.mode, t.root_cert), ("postgres://db/app", SslMode::Prefer, None));
        assert!(split("postgres://db/app?sslmode=allow").is_err());
        assert!(split("postgres://db/app?sslmode=verify-full&sslrootcert=/nonexistent.pem").is_ok());
        assert!(connection("postgres://db/app?sslmode=verify-full&sslrootcert=/nonexistent.pem").is_err());
        assert!(connection("postgres://db/app?sslmode=disable").is_ok());
    }
}
