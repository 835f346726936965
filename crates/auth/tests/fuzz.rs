//! Bounded mutation fuzzing of what the token endpoint and every authenticated request parse:
//! scope strings, presented API keys and bearer tokens. A mutated token that still verifies
//! must say exactly what the original says (the same facts and revocation ids) or be unusable
//! (no facts, and it authorizes nothing): the protobuf encoding is malleable (unknown fields
//! are skipped), what is signed is not.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

#[path = "../../oci/tests/fuzz_engine/mod.rs"]
mod fuzz_engine;

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use aerugo_auth::token::{Claims, Need, TokenKeys, TokenKind};
use aerugo_auth::{Action, Scope, apikey};
use aerugo_oci::RepoName;
use fuzz_engine::fuzz;

#[test]
fn scope_strings() {
    let corpus: &[&[u8]] = &[
        b"repository:acme/app:pull,push",
        b"repository:acme/team/app:pull",
        b"registry:catalog:*",
        b"repository:a:delete,*",
        b"repository::pull",
        b"repository:host:5000/acme/app:pull",
    ];
    let runs = fuzz("scopes", corpus, |input| {
        let Ok(s) = std::str::from_utf8(input) else { return };
        if let Ok(scope) = Scope::from_str(s) {
            let again = Scope::from_str(&scope.to_string()).expect("a printed scope parses");
            assert_eq!(again, scope, "{s:?}");
        }
    });
    assert!(runs > 100);
}

#[test]
fn presented_api_keys() {
    let corpus: &[&[u8]] = &[b"ak_0123456789abcdef_0123456789abcdef0123456789abcdef", b"ak__", b"ak_x_y", b"password"];
    let runs = fuzz("apikeys", corpus, |input| {
        let Ok(s) = std::str::from_utf8(input) else { return };
        let _ = apikey::parse(s);
    });
    assert!(runs > 100);
}

#[test]
fn bearer_tokens() {
    let keys = TokenKeys::generate();
    let claims = Claims {
        subject: "alice".into(),
        kind: TokenKind::Access,
        key_id: None,
        site_admin: false,
        access: vec![Scope::from_str("repository:acme/app:pull").unwrap()],
        expires_at: SystemTime::now() + Duration::from_secs(600),
    };
    let token = keys.mint(&claims).expect("mint");
    let original = keys.verify(&token).expect("verifies");
    let said = |v: &aerugo_auth::token::VerifiedToken| (format!("{:?}", v.facts().ok()), v.revocation_ids());
    let expected = said(&original);
    let (mut malleable, mut unusable) = (0u64, 0u64);
    let app = RepoName::from_str("acme/app").unwrap();
    assert!(original.authorize(&Need::Repository(&app, Action::Pull), SystemTime::now()).is_ok());
    let runs = fuzz("tokens", &[token.as_bytes(), b"", b"eyJ", b"Zm9v"], |input| {
        let Ok(s) = std::str::from_utf8(input) else { return };
        if let Ok(verified) = keys.verify(s) {
            if verified.facts().is_err() {
                let need = Need::Repository(&app, Action::Pull);
                assert!(verified.authorize(&need, SystemTime::now()).is_err(), "an unreadable token authorized: {s:?}");
                unusable += 1;
            } else {
                assert_eq!(said(&verified), expected, "a mutated token verified with other content: {s:?}");
                malleable += u64::from(s != token);
            }
        }
    });
    eprintln!(
        "tokens: {malleable} re-encodings verified with the original's content, {unusable} verified but unusable"
    );
    assert!(runs > 20);
}
