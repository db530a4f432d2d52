//! Account API tokens: `aigw_<id>_<secret>`, kept only as a salted hash.
//!
//! The id (16 hex digits) finds the verifier; the secret (64 hex digits, 256 random bits) is
//! checked against SHA-256(salt ‖ secret) in constant time. Neither the secret nor the token
//! is ever stored, replicated or logged: the proposer hashes it before the command is built.

use aigw_proto::admin::TokenVerifier;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every token starts with, so that leaked tokens are recognizable by scanners.
const PREFIX: &str = "aigw_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
const SALT_BYTES: usize = 16;

/// The OS random generator failed.
#[derive(Debug, thiserror::Error)]
#[error("no randomness for a token: {0}")]
pub struct NoRandomness(String);

fn random<const N: usize>() -> Result<[u8; N], NoRandomness> {
    let mut buf = [0; N];
    getrandom::fill(&mut buf).map_err(|e| NoRandomness(e.to_string()))?;
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn salted_hash(salt: &[u8], secret: &str) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(secret.as_bytes());
    hasher.finalize().to_vec()
}

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// The management API (`/client/v4`) for its account.
    Logs,
    /// Requests through its account's authenticated gateways (`cf-aig-authorization`).
    Run,
}

impl Permission {
    /// Every permission, the default of a token issued without a list.
    pub const ALL: [Permission; 2] = [Permission::Logs, Permission::Run];

    /// Its name: `logs` or `run`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Logs => "logs",
            Self::Run => "run",
        }
    }

    /// The permission called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Whether `verifier`'s token has `permission` (one without a list, issued before
/// permissions existed, has all).
pub fn grants(verifier: &TokenVerifier, permission: Permission) -> bool {
    verifier.permissions.is_empty() || verifier.permissions.iter().any(|p| p == permission.name())
}

/// A new token for `account_id` with `permissions`: the token to show once, and the
/// verifier to keep.
pub fn issue(
    account_id: &str,
    permissions: &[Permission],
    now_ms: i64,
) -> Result<(String, TokenVerifier), NoRandomness> {
    let id = hex(&random::<ID_BYTES>()?);
    let secret = hex(&random::<SECRET_BYTES>()?);
    let salt = random::<SALT_BYTES>()?.to_vec();
    let verifier = TokenVerifier {
        id: id.clone(),
        account_id: account_id.to_owned(),
        hash: salted_hash(&salt, &secret).into(),
        salt: salt.into(),
        created_at_ms: now_ms,
        permissions: permissions.iter().map(|p| p.name().to_owned()).collect(),
    };
    Ok((format!("{PREFIX}{id}_{secret}"), verifier))
}

/// Splits a presented token into its id and secret; `None` when it is not an aigw token.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix(PREFIX)?.split_once('_')?;
    (id.len() == 2 * ID_BYTES && !secret.is_empty()).then_some((id, secret))
}

/// Whether `secret` is the one `verifier` was made from (constant time in the secret).
pub fn verify(verifier: &TokenVerifier, secret: &str) -> bool {
    bool::from(salted_hash(&verifier.salt, secret).ct_eq(&verifier.hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let (token, verifier) = issue("acct", &[Permission::Run], 7).unwrap();
        let (id, secret) = parse(&token).unwrap();
        assert_eq!(id, verifier.id);
        assert!(verify(&verifier, secret));
        assert!(!verify(
            &verifier,
            &secret.replace('a', "b").replace('0', "1")
        ));
        assert!(
            !token.contains(&hex(&verifier.hash)),
            "the hash is not the secret"
        );
        let (other, _) = issue("acct", &[Permission::Run], 7).unwrap();
        assert_ne!(token, other);
        for bad in [
            "",
            "aigw_",
            "aigw_short_x",
            "Bearer x",
            "aigw_0123456789abcdef_",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_token_has_the_permissions_it_was_issued_with() {
        let (_, run_only) = issue("acct", &[Permission::Run], 7).unwrap();
        assert!(grants(&run_only, Permission::Run));
        assert!(!grants(&run_only, Permission::Logs));
        let (_, both) = issue("acct", &Permission::ALL, 7).unwrap();
        assert!(Permission::ALL.into_iter().all(|p| grants(&both, p)));
        let older = TokenVerifier {
            permissions: vec![],
            ..run_only
        };
        assert!(
            grants(&older, Permission::Logs),
            "a token without a list has all"
        );
        assert_eq!(Permission::parse("run"), Some(Permission::Run));
        assert_eq!(Permission::parse("admin"), None);
    }
}
