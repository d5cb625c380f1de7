//! The process's one TLS stack: rustls with the ring provider (no aws-lc,
//! no OpenSSL). reqwest needs a provider installed before any client is
//! built; the identity provider's key fetcher and every test client call
//! [`install_provider`] first.

/// Installs the ring provider as the process default; later calls do
/// nothing.
pub fn install_provider() {
    // An error means a provider is already installed, which is the goal.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
