//! Requests to a mirror's upstream registry, with the registry authentication clients use: a
//! `401` with a `Bearer` challenge sends the node to the named realm for a token (with the
//! mirror's credentials, if it has any), a `Basic` challenge gets the credentials directly.
//! Tokens are kept per upstream and scope until they expire. Redirects (blob downloads go to a
//! CDN) are followed without the upstream's credentials when they leave its host. The
//! client's own credentials never reach here: every request is built from the mirror alone.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aerugo_db::mirrors::Mirror;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;

use crate::http_client::{self, HttpClient, describe};

/// Why an upstream request did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The upstream does not have it (404).
    NotFound,
    /// The upstream is down, slow, rate limiting (429) or failing (5xx): a cached copy may
    /// stand in. The text says what happened.
    Unavailable(String),
    /// The upstream refused the mirror's credentials, or answered something unusable.
    Refused(String),
}

impl Failure {
    /// The metric label of this outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::NotFound => "not_found",
            Failure::Unavailable(_) => "unavailable",
            Failure::Refused(_) => "refused",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotFound => f.write_str("not found upstream"),
            Failure::Unavailable(why) | Failure::Refused(why) => f.write_str(why),
        }
    }
}

/// How requests to one upstream authenticate, learnt from its challenges.
#[derive(Clone)]
enum Credential {
    Basic(String),
    Bearer { token: String, until: Instant },
}

/// Requests to upstream registries.
pub struct Upstream {
    http: OnceLock<Result<HttpClient, String>>,
    timeout: Duration,
    /// (upstream, scope) → how to authenticate.
    credentials: Mutex<HashMap<(String, String), Credential>>,
}

/// Redirects followed at most per request.
const MAX_REDIRECTS: usize = 5;
/// Tokens without `expires_in` last this long (the token specification's default).
const DEFAULT_TOKEN_SECONDS: u64 = 60;

impl Upstream {
    /// A client whose requests fail after `timeout` without an answer.
    pub fn new(timeout: Duration) -> Self {
        Upstream { http: OnceLock::new(), timeout, credentials: Mutex::new(HashMap::new()) }
    }

    /// The per-request timeout (also the longest wait for a blob's next bytes).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn http(&self) -> Result<&HttpClient, Failure> {
        self.http
            .get_or_init(|| http_client::new().map_err(|e| format!("building the HTTP client: {e}")))
            .as_ref()
            .map_err(|e| Failure::Unavailable(e.clone()))
    }

    /// `method` on `/v2/<repository>/<tail>` of the mirror's upstream, authenticated as the
    /// upstream asks, redirects followed. A 2xx answer is returned; anything else is a
    /// [`Failure`].
    pub async fn send(
        &self,
        mirror: &Mirror,
        method: Method,
        repository: &str,
        tail: &str,
        accept: Option<&str>,
    ) -> Result<Response<Incoming>, Failure> {
        let scope = format!("repository:{repository}:pull");
        let key = (mirror.upstream.clone(), scope.clone());
        let mut url = format!("{}/v2/{repository}/{tail}", mirror.upstream);
        let mut authenticated_once = false;
        let mut redirects = 0;
        loop {
            let same_host = same_origin(&url, &mirror.upstream);
            let credential = if same_host { self.credential(&key) } else { None };
            let response = self.request(method.clone(), &url, accept, credential.as_deref()).await?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status.is_redirection()
                && let Some(location) = response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok())
            {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(Failure::Unavailable(format!("{url}: more than {MAX_REDIRECTS} redirects")));
                }
                url = resolve(&url, location)
                    .ok_or_else(|| Failure::Refused(format!("{url}: redirect to an invalid location {location:?}")))?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && same_host && !authenticated_once {
                authenticated_once = true;
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .unwrap_or_default();
                let credential = self.authenticate(mirror, &challenge, &scope).await?;
                if let Ok(mut known) = self.credentials.lock() {
                    known.insert(key.clone(), credential);
                }
                continue;
            }
            return Err(classify(status, &url));
        }
    }

    /// The `Authorization` value known for `key`, unless its token expired.
    fn credential(&self, key: &(String, String)) -> Option<String> {
        let known = self.credentials.lock().ok()?;
        match known.get(key)? {
            Credential::Basic(value) => Some(value.clone()),
            Credential::Bearer { token, until } if *until > Instant::now() => Some(format!("Bearer {token}")),
            Credential::Bearer { .. } => None,
        }
    }

    async fn request(
        &self,
        method: Method,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Response<Incoming>, Failure> {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header(header::USER_AGENT, concat!("aerugo-mirror/", env!("CARGO_PKG_VERSION")));
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| Failure::Refused(format!("{url}: invalid request: {e}")))?;
        match tokio::time::timeout(self.timeout, self.http()?.request(request)).await {
            Err(_) => Err(Failure::Unavailable(format!("{url}: no answer within {} s", self.timeout.as_secs()))),
            Ok(Err(e)) => Err(Failure::Unavailable(format!("{url}: {}", describe(&e)))),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// Answers a challenge: a token from a `Bearer` realm, or the credentials for `Basic`.
    async fn authenticate(&self, mirror: &Mirror, challenge: &str, scope: &str) -> Result<Credential, Failure> {
        let basic = mirror.credentials.as_ref().map(|(user, password)| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
        });
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            return basic.map(Credential::Basic).ok_or_else(|| {
                Failure::Refused(format!(
                    "{} asks for credentials; give the Mirror a credentialsSecret",
                    mirror.upstream
                ))
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Failure::Refused(format!(
                "{} answered 401 with an unusable challenge {challenge:?}",
                mirror.upstream
            )));
        }
        let realm = params.get("realm").ok_or_else(|| {
            Failure::Refused(format!("{} answered 401 with a Bearer challenge without a realm", mirror.upstream))
        })?;
        let mut url =
            url::Url::parse(realm).map_err(|e| Failure::Refused(format!("token realm {realm:?} is not a URL: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = params.get("service") {
                query.append_pair("service", service);
            }
            query.append_pair("scope", params.get("scope").map_or(scope, String::as_str));
        }
        let response = self.request(Method::GET, url.as_str(), None, basic.as_deref()).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(match classify(status, realm) {
                Failure::NotFound => Failure::Refused(format!("token realm {realm} answered 404")),
                other => other,
            });
        }
        let body = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .map_err(|_| Failure::Unavailable(format!("token realm {realm}: no answer within the timeout")))?
            .map_err(|e| Failure::Unavailable(format!("token realm {realm}: {}", describe(&e))))?
            .to_bytes();
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| Failure::Refused(format!("token realm {realm} answered no token: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Failure::Refused(format!("token realm {realm} answered no token")))?;
        // Renewed a little before the upstream stops honouring it.
        let lasts = answer.expires_in.unwrap_or(DEFAULT_TOKEN_SECONDS).max(10);
        Ok(Credential::Bearer { token, until: Instant::now() + Duration::from_secs(lasts * 9 / 10) })
    }
}

/// What a non-2xx status means for a mirror.
fn classify(status: StatusCode, url: &str) -> Failure {
    match status {
        StatusCode::NOT_FOUND => Failure::NotFound,
        StatusCode::TOO_MANY_REQUESTS => Failure::Unavailable(format!("{url}: rate limited (429)")),
        s if s.is_server_error() => Failure::Unavailable(format!("{url}: {s}")),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Failure::Refused(format!("{url}: {status}: the upstream refused the mirror's credentials"))
        }
        s => Failure::Refused(format!("{url}: unexpected {s}")),
    }
}

/// Whether `url` is on the same scheme, host and port as `base`.
fn same_origin(url: &str, base: &str) -> bool {
    match (url::Url::parse(url), url::Url::parse(base)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// `location` resolved against `url` (it may be relative).
fn resolve(url: &str, location: &str) -> Option<String> {
    let resolved = url::Url::parse(url).ok()?.join(location).ok()?;
    matches!(resolved.scheme(), "http" | "https").then(|| resolved.to_string())
}

/// Splits a `WWW-Authenticate` value into its scheme and `key="value"` parameters (RFC 7235).
pub fn parse_challenge(value: &str) -> (String, HashMap<String, String>) {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut val = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            val = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_owned();
        }
        params.insert(key.trim().to_ascii_lowercase(), val);
    }
    (scheme.to_owned(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed_with_quoted_commas_and_escapes() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example.test/token",service="registry.example.test",scope="repository:library/alpine:pull,push",error="x\"y""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(params["realm"], "https://auth.example.test/token");
        assert_eq!(params["service"], "registry.example.test");
        assert_eq!(params["scope"], "repository:library/alpine:pull,push");
        assert_eq!(params["error"], "x\"y");
        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!((scheme.as_str(), params["realm"].as_str()), ("Basic", "Registry Realm"));
        let (scheme, params) = parse_challenge("Basic");
        assert_eq!((scheme.as_str(), params.len()), ("Basic", 0));
        let (_, params) = parse_challenge("Bearer realm=unquoted, service = s");
        assert_eq!(params["realm"], "unquoted");
    }

    #[test]
    fn statuses_are_classified_and_redirects_resolved() {
        assert_eq!(classify(StatusCode::NOT_FOUND, "u"), Failure::NotFound);
        assert!(matches!(classify(StatusCode::TOO_MANY_REQUESTS, "u"), Failure::Unavailable(_)));
        assert!(matches!(classify(StatusCode::BAD_GATEWAY, "u"), Failure::Unavailable(_)));
        assert!(matches!(classify(StatusCode::FORBIDDEN, "u"), Failure::Refused(_)));
        assert!(same_origin("https://r.test/v2/x", "https://r.test"));
        assert!(!same_origin("https://cdn.test/blob", "https://r.test"), "credentials stay with the upstream");
        assert!(!same_origin("http://r.test/v2/x", "https://r.test"));
        assert_eq!(resolve("https://r.test/v2/a/blobs/x", "/b?sig=1").as_deref(), Some("https://r.test/b?sig=1"));
        assert_eq!(resolve("https://r.test/v2/", "ftp://x/"), None);
    }
}
