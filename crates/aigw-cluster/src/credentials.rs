//! What a node presents to the cluster's protected services.

use std::fmt;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Status};

/// The admin token, sent as `authorization: Bearer <token>` on every call to the account
/// manager's services (`Gateways`, `Cluster`), which require it when a token is configured —
/// they can rewrite the shard map. Never printed.
#[derive(Clone, Default)]
pub struct Credentials(Option<MetadataValue<Ascii>>);

impl Credentials {
    /// No credentials (a cluster without an admin token).
    pub fn none() -> Self {
        Self(None)
    }

    /// `Bearer token`, or none when `token` is `None`.
    pub fn bearer(token: Option<&str>) -> Result<Self, Status> {
        token
            .map(|t| {
                format!("Bearer {t}").parse().map_err(|_| {
                    Status::invalid_argument("the admin token is not a valid header value")
                })
            })
            .transpose()
            .map(Self)
    }

    /// Adds the credentials to `request`.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Credentials(Bearer <redacted>)"
        } else {
            "Credentials(none)"
        })
    }
}
