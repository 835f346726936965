//! The [`Caller`] extractor of `/v2/` handlers: it reads the credentials of a request without
//! checking them, and checks them when the handler asks for an action on a repository.
//!
//! Refusals are the same for a repository that exists and one that does not: anonymous and
//! bearer callers get `401` with a challenge naming the scope they need (the token flow then
//! asks for it), callers with Basic credentials get `403 DENIED`.

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use aerugo_auth::Action;
use aerugo_auth::token::{Need, TokenKind};
use aerugo_db::audit::{self, Event};
use aerugo_db::tenancy::{self, Viewer};
use aerugo_oci::RepoName;
use serde_json::json;

use super::tokens::TokenRefusal;
use super::{Auth, CachedToken, Presented, Principal};
use crate::cache::View;
use crate::error::{RegistryError, Result};
use crate::registry::Actor;

/// The credentials of a request, checked on demand.
pub struct Caller {
    auth: web::Data<Auth>,
    presented: Presented,
    source: Option<String>,
    /// The request, for the realm of a challenge (built only when refusing).
    req: HttpRequest,
}

/// Whose repositories a catalog request may list.
pub struct CatalogViewer {
    /// The viewer, for the SQL filter.
    pub viewer: Viewer,
    /// The API key's scopes, which narrow the listing further.
    pub principal: Option<Arc<Principal>>,
}

/// How a checked caller is known.
enum Checked {
    Anonymous,
    Basic(Arc<Principal>),
    Bearer(Arc<CachedToken>),
}

/// A final refusal of `action` on `name`: a pull answers `404` as a missing repository would
/// (the endpoint names it), anything else `refusal` (403).
fn hidden(name: &RepoName, action: Action, refusal: RegistryError) -> RegistryError {
    match action {
        Action::Pull => RegistryError::NotVisible(name.to_string()),
        Action::Push | Action::Delete => refusal,
    }
}

/// The client's address (see [`client_address`]).
pub fn source_address(req: &HttpRequest, trusted_proxies: &[ipnet::IpNet]) -> Option<String> {
    let peer = req.peer_addr()?.ip();
    Some(client_address(peer, req.headers(), trusted_proxies).to_string())
}

/// Forwarding hops believed at most: more is no real chain of proxies.
const MAX_HOPS: usize = 16;

/// The client's address: the peer, unless the peer is a trusted proxy. Then the forwarding
/// headers (`Forwarded`'s `for=`, else `X-Forwarded-For`) are walked from the nearest hop back,
/// and the first address that is not a trusted proxy is the client. Entries further back were
/// written by the client itself and are never believed; an entry that is no address ends the
/// walk at the last hop believed.
pub fn client_address(
    peer: std::net::IpAddr,
    headers: &actix_web::http::header::HeaderMap,
    trusted_proxies: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let trusted = |ip: &std::net::IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    };
    let forwarded = values("forwarded");
    let hops: Vec<String> = if forwarded.is_empty() {
        values("x-forwarded-for").iter().flat_map(|v| v.split(',')).map(|h| h.trim().to_owned()).collect()
    } else {
        forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(|element| {
                element
                    .split(';')
                    .find_map(|pair| {
                        let (key, value) = pair.trim().split_once('=')?;
                        key.trim().eq_ignore_ascii_case("for").then(|| value.trim().to_owned())
                    })
                    .unwrap_or_default()
            })
            .collect()
    };
    let mut client = peer;
    for hop in hops.iter().rev().take(MAX_HOPS) {
        match hop_address(hop) {
            Some(ip) if trusted(&ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// An address of a forwarding entry: `1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]:80`, `2001:db8::1`,
/// quoted or not; `None` for `unknown`, obfuscated names and anything else.
fn hop_address(hop: &str) -> Option<std::net::IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(socket) = hop.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    hop.strip_prefix('[').and_then(|h| h.split_once(']')).and_then(|(ip, _)| ip.parse().ok())
}

/// The token endpoint's URL as clients must reach it.
pub fn realm(req: &HttpRequest, public_url: Option<&str>) -> String {
    match public_url {
        Some(base) => format!("{base}/v2/token"),
        None => {
            let info = req.connection_info();
            format!("{}://{}/v2/token", info.scheme(), info.host())
        }
    }
}

fn quote(value: &str) -> String {
    value.replace(['"', '\\'], "")
}

impl Caller {
    fn challenge(&self, scope: Option<&str>, error: Option<&str>) -> String {
        let public_url = self.req.app_data::<web::Data<crate::Registry>>().and_then(|r| r.public_url());
        let realm = realm(&self.req, public_url);
        let mut challenge =
            format!("Bearer realm=\"{}\",service=\"{}\"", quote(&realm), quote(&self.auth.settings().service));
        if let Some(scope) = scope {
            challenge.push_str(&format!(",scope=\"{}\"", quote(scope)));
        }
        if let Some(error) = error {
            challenge.push_str(&format!(",error=\"{error}\""));
        }
        challenge
    }

    fn unauthorized(&self, scope: Option<&str>, error: Option<&str>, detail: &str) -> RegistryError {
        RegistryError::Unauthorized { challenge: self.challenge(scope, error), detail: detail.to_owned() }
    }

    /// `401` with a challenge naming `scope` and `error="insufficient_scope"` (RFC 6750, the
    /// docker token specification): the client asks the token endpoint for that scope and
    /// retries. docker, containerd and generic clients fetch a new token only after a 401.
    fn insufficient_scope(&self, scope: &str) -> RegistryError {
        RegistryError::Unauthorized {
            challenge: self.challenge(Some(scope), Some("insufficient_scope")),
            detail: "the token does not grant this access; ask the token endpoint for the scope".into(),
        }
    }

    /// The refusal of a valid token that does not allow `action` on `name`: `401
    /// insufficient_scope` when a token for it would be granted to the token's holder (or the
    /// holder is anonymous: logging in may help), else `403 DENIED` — no token could grant it,
    /// and asking again would loop. Both answers are the same whether or not `name` exists.
    async fn refuse_token(&self, token: &CachedToken, name: &RepoName, action: Action, scope: &str) -> RegistryError {
        if token.facts.subject.is_empty() {
            return self.insufficient_scope(scope);
        }
        let grantable = match self.auth.principal_of(&token.facts.subject, token.facts.key_id.as_deref()).await {
            Ok(Some(principal)) => self.allowed_by_rights(Some(&principal), name, action).await,
            Ok(None) => false,
            Err(e) => return e,
        };
        if grantable {
            self.insufficient_scope(scope)
        } else {
            let challenge = self.challenge(Some(scope), Some("insufficient_scope"));
            hidden(name, action, RegistryError::DeniedWithChallenge { challenge })
        }
    }

    /// The client's address.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    async fn check(&self, scope: Option<&str>) -> Result<Checked> {
        match &self.presented {
            Presented::Nothing => Ok(Checked::Anonymous),
            Presented::Malformed(why) => Err(self.unauthorized(scope, None, why)),
            Presented::Basic { username, secret } => self
                .auth
                .authenticate(username, secret, self.source(), || self.challenge(scope, None))
                .await
                .map(Checked::Basic),
            Presented::Bearer(token) => match self.auth.verify_token(token, TokenKind::Access) {
                Ok(cached) => Ok(Checked::Bearer(cached)),
                Err(TokenRefusal::Invalid) => {
                    Err(self.unauthorized(scope, Some("invalid_token"), "the token is invalid or has expired"))
                }
                Err(TokenRefusal::Revoked) => {
                    Err(self.unauthorized(scope, Some("invalid_token"), "the token's credentials were revoked"))
                }
            },
        }
    }

    /// Allows `action` on `name` or refuses it, answering the same whether or not the
    /// repository exists. Returns who acts, for the core's audit events.
    pub async fn authorize(&self, name: &RepoName, action: Action) -> Result<Actor> {
        self.authorize_with(name, action, None).await
    }

    /// [`Caller::authorize`] with decisions for anonymous and Basic callers taken from (and
    /// kept in) the cache of `view` (the pull path).
    pub async fn authorize_in(&self, view: &View<'_>, name: &RepoName, action: Action) -> Result<Actor> {
        self.authorize_with(name, action, Some(view)).await
    }

    /// [`Caller::authorize_in`] for a pull: a repository the caller may not pull answers
    /// `unknown()`, what the endpoint answers for something missing.
    pub async fn authorize_pull(
        &self,
        view: &View<'_>,
        name: &RepoName,
        unknown: impl FnOnce() -> RegistryError,
    ) -> Result<Actor> {
        self.authorize_with(name, Action::Pull, Some(view)).await.map_err(|e| e.or_unknown(unknown))
    }

    async fn authorize_with(&self, name: &RepoName, action: Action, view: Option<&View<'_>>) -> Result<Actor> {
        // Built only for a refusal: the allowed path does not allocate it.
        let scope = || {
            format!(
                "repository:{name}:{}",
                match action {
                    Action::Push => "pull,push",
                    other => other.as_str(),
                }
            )
        };
        let checked = match self.check(None).await {
            Ok(checked) => checked,
            Err(RegistryError::Unauthorized { detail, .. }) => {
                let error = matches!(self.presented, Presented::Bearer(_)).then_some("invalid_token");
                return Err(self.unauthorized(Some(&scope()), error, &detail));
            }
            Err(other) => return Err(other),
        };
        match &checked {
            Checked::Bearer(token) => {
                if token.allows(&Need::Repository(name, action)) {
                    return Ok(self.actor(&token.facts.subject, token.facts.site_admin));
                }
                self.audit_denied(&token.facts.subject, name, action).await;
                Err(self.refuse_token(token, name, action, &scope()).await)
            }
            Checked::Anonymous | Checked::Basic(_) => {
                let principal = match &checked {
                    Checked::Basic(p) => Some(p.as_ref()),
                    _ => None,
                };
                let rights = match view {
                    Some(view) => self.auth.cached_rights(view, principal, name).await?,
                    None => {
                        let client = self.auth.client().await?;
                        // One pool connection per request at a time: the audit below takes its own.
                        self.auth.rights(&client, principal, name).await?
                    }
                };
                if rights.actions.contains(action) {
                    return Ok(match principal {
                        Some(p) => self.actor(&p.actor(), p.site_admin),
                        None => self.actor("anonymous", false),
                    });
                }
                match principal {
                    None => Err(self.unauthorized(Some(&scope()), None, "authentication required")),
                    Some(p) => {
                        self.audit_denied(&p.actor(), name, action).await;
                        Err(hidden(
                            name,
                            action,
                            RegistryError::Denied("requested access to the resource is denied".into()),
                        ))
                    }
                }
            }
        }
    }

    /// Requires valid credentials of any kind (the `/v2/` version check).
    pub async fn authenticated(&self) -> Result<()> {
        match self.check(None).await? {
            Checked::Anonymous => Err(self.unauthorized(None, None, "authentication required")),
            Checked::Basic(_) | Checked::Bearer(_) => Ok(()),
        }
    }

    /// Whether `action` on `name` is allowed, without refusing or auditing (a mount's source).
    pub async fn may(&self, name: &RepoName, action: Action) -> bool {
        match self.check(None).await {
            Ok(Checked::Bearer(token)) => token.allows(&Need::Repository(name, action)),
            Ok(Checked::Basic(p)) => self.allowed_by_rights(Some(&p), name, action).await,
            Ok(Checked::Anonymous) => self.allowed_by_rights(None, name, action).await,
            Err(_) => false,
        }
    }

    async fn allowed_by_rights(&self, principal: Option<&Principal>, name: &RepoName, action: Action) -> bool {
        match self.auth.client().await {
            Ok(client) => self.auth.rights(&client, principal, name).await.is_ok_and(|r| r.actions.contains(action)),
            Err(_) => false,
        }
    }

    /// Who may see which repositories in the catalog.
    pub async fn catalog_viewer(&self) -> Result<CatalogViewer> {
        const SCOPE: &str = "registry:catalog:*";
        let principal = match self.check(Some(SCOPE)).await? {
            Checked::Anonymous => return Err(self.unauthorized(Some(SCOPE), None, "authentication required")),
            Checked::Basic(p) => p,
            Checked::Bearer(token) => {
                if !token.allows(&Need::Catalog) {
                    // Everyone is granted the catalog scope (the listing is filtered).
                    return Err(self.insufficient_scope(SCOPE));
                }
                match self.auth.principal_of(&token.facts.subject, token.facts.key_id.as_deref()).await? {
                    Some(p) => Arc::new(p),
                    // Anonymous tokens (or credentials gone since): public repositories only.
                    None => return Ok(CatalogViewer { viewer: Viewer::default(), principal: None }),
                }
            }
        };
        let key = principal.key.as_ref();
        let viewer = Viewer {
            user_id: principal.user_id,
            key_row_id: key.map(|k| k.row_id),
            key_org_id: key.and_then(|k| k.org.as_ref()).map(|(id, _)| *id),
            site_admin: principal.site_admin,
        };
        Ok(CatalogViewer { viewer, principal: Some(principal) })
    }

    fn actor(&self, name: &str, site_admin: bool) -> Actor {
        Actor { name: name.to_owned(), source: self.source.clone(), site_admin }
    }

    /// Records a refused request of an authenticated caller, attributed to the organization
    /// the name falls in (so its admins see probes). Failing to record never changes the answer.
    async fn audit_denied(&self, actor: &str, name: &RepoName, action: Action) {
        let record = async {
            let client = self.auth.client().await?;
            let org_id = tenancy::organization(&client, name.namespace()).await?.map(|o| o.id);
            let event = Event {
                actor,
                action: "access.denied",
                target: name.as_str(),
                org_id,
                source: self.source(),
                allowed: false,
                detail: json!({ "action": action.as_str() }),
            };
            audit::record(&client, &event).await?;
            Ok::<_, RegistryError>(())
        };
        if let Err(e) = record.await {
            tracing::warn!(error = %e, "could not record a denied request");
        }
    }
}

impl FromRequest for Caller {
    type Error = RegistryError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let Some(auth) = req.app_data::<web::Data<Auth>>().cloned() else {
            return ready(Err(RegistryError::Internal("authentication is not configured".into())));
        };
        let presented = Presented::parse(req.headers().get("authorization").map(|v| v.as_bytes()));
        let source = source_address(req, &auth.settings().trusted_proxies);
        ready(Ok(Caller { req: req.clone(), presented, source, auth }))
    }
}

#[cfg(test)]
mod forwarded_tests {
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    use super::client_address;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_static(name), HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn forwarding_headers_are_believed_only_from_trusted_proxies() {
        let proxies: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("cidr"), "::1/128".parse().expect("cidr")];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let client = |peer: &str, pairs: &[(&'static str, &str)]| client_address(ip(peer), &headers(pairs), &proxies);
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(client("203.0.113.9", &[("x-forwarded-for", "1.1.1.1")]), ip("203.0.113.9"));
        // Through one proxy: the entry it appended; what the client wrote before it is ignored.
        assert_eq!(client("10.0.0.5", &[("x-forwarded-for", "6.6.6.6, 198.51.100.7")]), ip("198.51.100.7"));
        // Through two proxies, over two header lines.
        let two = [("x-forwarded-for", "6.6.6.6, 198.51.100.7"), ("x-forwarded-for", "10.1.2.3")];
        assert_eq!(client("10.0.0.5", &two), ip("198.51.100.7"));
        // RFC 7239, preferred over X-Forwarded-For; ports, brackets and quotes.
        let rfc =
            [("forwarded", r#"for=6.6.6.6, for="[2001:db8::7]:4711";proto=https"#), ("x-forwarded-for", "9.9.9.9")];
        assert_eq!(client("::1", &rfc), ip("2001:db8::7"));
        assert_eq!(client("10.0.0.5", &[("forwarded", "for=198.51.100.7:80")]), ip("198.51.100.7"));
        // Garbage or `unknown` ends the walk at the last hop believed.
        assert_eq!(client("10.0.0.5", &[("x-forwarded-for", "6.6.6.6, not-an-ip")]), ip("10.0.0.5"));
        assert_eq!(client("10.0.0.5", &[("forwarded", "for=unknown")]), ip("10.0.0.5"));
        // A trusted proxy without headers is the client (health checks).
        assert_eq!(client("10.0.0.5", &[]), ip("10.0.0.5"));
        // No proxies configured: headers never count.
        assert_eq!(client_address(ip("10.0.0.5"), &headers(&[("x-forwarded-for", "1.1.1.1")]), &[]), ip("10.0.0.5"));
    }
}
