//! HTTPS for the mock: a throwaway certificate authority, and a certificate for `localhost`,
//! `127.0.0.1` and `::1` that it signs, both made when the server starts. Clients trust the
//! mock through the CA alone — as aigw trusts a provider behind a private CA through
//! `proxy.upstream_ca_file` — and ALPN offers `h2` before `http/1.1`, as real providers do.

use std::io;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// The TLS side of a mock started with [`crate::MockOptions::tls`].
#[derive(Clone)]
pub(crate) struct MockTls {
    /// Accepts connections with the signed certificate.
    pub(crate) acceptor: TlsAcceptor,
    /// The CA certificate (PEM) clients must trust.
    pub(crate) ca_pem: String,
}

impl MockTls {
    /// Makes a new CA and server certificate.
    pub(crate) fn generate() -> io::Result<Self> {
        let ca_key = KeyPair::generate().map_err(io::Error::other)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(io::Error::other)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "aigw-mock test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(io::Error::other)?;

        let key = KeyPair::generate().map_err(io::Error::other)?;
        let mut leaf = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])
        .map_err(io::Error::other)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = leaf
            .signed_by(&key, &ca_cert, &ca_key)
            .map_err(io::Error::other)?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(io::Error::other)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            ca_pem: ca_cert.pem(),
        })
    }
}
