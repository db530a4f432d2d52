//! Who is calling: bearer tokens → [`Principal`].

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The identity a bearer token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator: may manage every account.
    Admin,
    /// An account API token: may manage this one account only.
    Account(String),
}

impl Principal {
    /// Whether this principal may act on `account`.
    pub fn may_access(&self, account: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::Account(own) => own == account,
        }
    }
}

/// Resolves bearer tokens. Implementations must not log or keep the token they are given.
pub trait Authenticator: Send + Sync + 'static {
    /// The principal `bearer` authenticates, if any.
    fn authenticate(&self, bearer: &str) -> Option<Principal>;
}

type Digest32 = [u8; 32];

/// Tokens fixed at start-up: an optional admin token and per-account tokens known only by their
/// SHA-256 digests.
///
/// Every comparison is done on digests in constant time, so neither a token's content nor its
/// length leaks through timing; the admin token itself is not kept, only its digest.
pub struct StaticTokens {
    admin: Option<Digest32>,
    accounts: Vec<(String, Digest32)>,
}

impl StaticTokens {
    /// `admin_token` (empty counts as none) and `(account, sha256 hex of its token)` pairs.
    /// Pairs whose digest is not 64 hex digits can never match; they are reported with a warning.
    pub fn new(admin_token: Option<&str>, account_token_hashes: Vec<(String, String)>) -> Self {
        let admin = admin_token.filter(|t| !t.is_empty()).map(digest);
        let accounts = account_token_hashes
            .into_iter()
            .filter_map(|(account, hex)| match parse_hex_digest(&hex) {
                Some(d) => Some((account, d)),
                None => {
                    tracing::warn!(%account, "ignoring an account token hash that is not 64 hex digits");
                    None
                }
            })
            .collect();
        Self { admin, accounts }
    }

    /// The lowercase SHA-256 hex digest of `token`, as [`StaticTokens::new`] expects it.
    pub fn hash_token(token: &str) -> String {
        use std::fmt::Write;
        digest(token)
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }
}

impl fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticTokens")
            .field("admin", &self.admin.is_some())
            .field("accounts", &self.accounts.len())
            .finish()
    }
}

impl Authenticator for StaticTokens {
    fn authenticate(&self, bearer: &str) -> Option<Principal> {
        if bearer.is_empty() {
            return None;
        }
        let presented = digest(bearer);
        if self
            .admin
            .is_some_and(|admin| bool::from(admin.ct_eq(&presented)))
        {
            return Some(Principal::Admin);
        }
        // Scan every entry so the time taken does not depend on which one matched.
        let mut found = None;
        for (account, known) in &self.accounts {
            if bool::from(known.ct_eq(&presented)) && found.is_none() {
                found = Some(account);
            }
        }
        found.map(|a| Principal::Account(a.clone()))
    }
}

fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_hex_digest(hex: &str) -> Option<Digest32> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_and_account_tokens_authenticate() {
        let tokens = StaticTokens::new(
            Some("root"),
            vec![
                ("a1".into(), StaticTokens::hash_token("t1")),
                ("a2".into(), StaticTokens::hash_token("t2").to_uppercase()),
                ("bad".into(), "zz".into()),
            ],
        );
        assert_eq!(tokens.authenticate("root"), Some(Principal::Admin));
        assert_eq!(
            tokens.authenticate("t1"),
            Some(Principal::Account("a1".into()))
        );
        assert_eq!(
            tokens.authenticate("t2"),
            Some(Principal::Account("a2".into()))
        );
        assert_eq!(tokens.authenticate("t3"), None);
        assert_eq!(tokens.authenticate(""), None);
        assert!(!format!("{tokens:?}").contains("root"));
    }

    #[test]
    fn empty_admin_token_is_no_admin_token() {
        let tokens = StaticTokens::new(Some(""), Vec::new());
        assert_eq!(tokens.authenticate(""), None);
    }

    #[test]
    fn hash_is_lowercase_sha256_hex() {
        assert_eq!(
            StaticTokens::hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn principals_are_scoped() {
        assert!(Principal::Admin.may_access("x"));
        assert!(Principal::Account("x".into()).may_access("x"));
        assert!(!Principal::Account("x".into()).may_access("y"));
    }
}
