//! TLS termination (`server.tls`) and client certificates.
//!
//! rustls with the aws-lc provider, TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`. With
//! `client_ca`, a client certificate is asked for (`client_auth = "optional"`) or demanded
//! (`"required"`): one that chains to `client_ca` (validity and the clientAuth key usage
//! included) is accepted, and so is a self-signed one — with `"optional"` any, with
//! `"required"` only one registered to an OAuth client ([`SelfSignedPins`]). A self-signed
//! certificate can only be matched against the certificate registered for an OAuth client
//! (RFC 8705 `self_signed_tls_client_auth`), never be an `mtls` identity, which needs the
//! chain. Any other certificate fails the handshake.
//!
//! With `client_crl`, a client certificate revoked by its issuer's list fails the handshake
//! (the end entity is checked; a certificate whose issuer published no list in the file is
//! not refused for that, and a list past its next update still applies).
//!
//! The files are read again on SIGHUP, and when their modification time changes (checked
//! every 2 s): new connections get the new certificate, open ones keep theirs. A file that
//! cannot be read keeps the previous configuration and is logged.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use keycard_core::CertSource;
use keycard_core::cert::CertIdentity;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::sync::watch;

/// `server.tls`: keycard terminates TLS itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to; absent: no client
    /// certificate is asked for.
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM `X509 CRL` blocks, or one DER list) of the client
    /// CAs: a client certificate they revoke fails the handshake.
    pub client_crl: Option<PathBuf>,
    /// Whether a client certificate is required to complete the handshake.
    pub client_auth: ClientAuth,
}

/// `server.tls.client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Asked for; a client without one still connects (other methods then apply).
    Optional,
    /// A client without a certificate cannot complete the handshake.
    Required,
}

/// Why TLS material could not be loaded: `key` is the config key under `server.tls`
/// (or the full key for `mtls.client_ca`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    /// `cert`, `key` or `client_ca`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(key: &'static str, path: &Path, what: impl std::fmt::Display) -> TlsError {
    TlsError {
        key,
        message: format!("{}: {what}", path.display()),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The CA client certificates are verified against.
#[derive(Debug)]
pub struct ClientCa {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ClientCa {
    /// Reads the PEM CA certificates at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, TlsError> {
        Self::load_with_crls(path, None)
    }

    /// Reads the PEM CA certificates at `path`, and the revocation lists at `crl`.
    pub(crate) fn load_with_crls(path: &Path, crl: Option<&Path>) -> Result<Self, TlsError> {
        let key = "client_ca";
        let pem = std::fs::read(path).map_err(|e| err(key, path, e))?;
        let mut roots = RootCertStore::empty();
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|e| err(key, path, format!("not PEM certificates ({e:?})")))?;
            roots
                .add(c)
                .map_err(|e| err(key, path, format!("not a usable CA certificate ({e})")))?;
            n += 1;
        }
        if n == 0 {
            return Err(err(key, path, "holds no PEM CERTIFICATE block"));
        }
        let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated();
        if let Some(crl) = crl {
            builder = builder
                .with_crls(read_crls(crl)?)
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status();
        }
        // The lists are parsed here: a broken one stops start-up (or a reload) naming its file.
        let verifier = builder.build().map_err(|e| match (e, crl) {
            (rustls::server::VerifierBuilderError::InvalidCrl(e), Some(crl)) => err(
                "client_crl",
                crl,
                format!("not a usable revocation list ({e:?})"),
            ),
            (e, _) => err(key, path, e),
        })?;
        Ok(Self { verifier })
    }

    /// Whether `chain` (leaf first) chains to this CA now, valid and for client auth.
    pub(crate) fn verifies(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        self.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok()
    }
}

/// The revocation lists in `path`: PEM `X509 CRL` blocks, or one DER list.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let key = "client_crl";
    let bytes = std::fs::read(path).map_err(|e| err(key, path, e))?;
    let crls = if bytes.starts_with(b"-----") || bytes.iter().take(64).all(u8::is_ascii) {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(key, path, format!("not PEM revocation lists ({e:?})")))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err(err(key, path, "holds no X509 CRL block"));
    }
    Ok(crls)
}

/// The client certificate of a connection (or a trusted proxy's forwarded one).
#[derive(Debug)]
pub struct PeerCert {
    /// What it says.
    pub identity: CertIdentity,
    /// Whether it chains to the client CA (else it is self-signed: only good for
    /// `self_signed_tls_client_auth`).
    pub chain_verified: bool,
    /// Where it came from: this connection's handshake, or a proxy's header.
    pub source: CertSource,
    /// The chain as presented, leaf first (checked against a rule's own trust bundle).
    chain: Box<[CertificateDer<'static>]>,
    /// Which rule bundles it chains to, by rule index, once judged: a connection's
    /// certificate is verified against a bundle on its first request, not on each.
    judged: Mutex<Vec<(usize, bool)>>,
}

impl PeerCert {
    /// The certificate `chain` (leaf first) as `ca` judges it; `None` if the leaf cannot
    /// be read.
    pub(crate) fn judge(
        chain: &[CertificateDer<'_>],
        ca: Option<&ClientCa>,
        source: CertSource,
    ) -> Option<Self> {
        let identity = CertIdentity::from_der(chain.first()?.as_ref()).ok()?;
        let chain_verified = ca.is_some_and(|ca| ca.verifies(chain));
        Some(Self {
            identity,
            chain_verified,
            source,
            chain: owned(chain),
            judged: Mutex::new(Vec::new()),
        })
    }

    /// Whether the certificate chains to `bundle`, the trust bundle of rule `rule` (the
    /// answer kept for this certificate's later requests).
    pub(crate) fn chains_to(&self, rule: usize, bundle: &ClientCa) -> bool {
        let mut judged = self.judged.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, ok)) = judged.iter().find(|(i, _)| *i == rule) {
            return *ok;
        }
        let ok = bundle.verifies(&self.chain);
        judged.push((rule, ok));
        ok
    }
}

fn owned(chain: &[CertificateDer<'_>]) -> Box<[CertificateDer<'static>]> {
    chain.iter().map(|c| c.clone().into_owned()).collect()
}

impl PeerCert {
    /// The certificate of a completed handshake under `CaOrSelfSigned`: that verifier
    /// let through only certificates that chain to `ca` and self-issued ones, so only a
    /// self-issued one is checked again (it might be neither).
    pub(crate) fn from_handshake(
        chain: &[CertificateDer<'_>],
        ca: Option<&ClientCa>,
    ) -> Option<Self> {
        let identity = CertIdentity::from_der(chain.first()?.as_ref()).ok()?;
        let chain_verified =
            ca.is_some() && (!identity.self_issued || ca.is_some_and(|ca| ca.verifies(chain)));
        Some(Self {
            identity,
            chain_verified,
            source: CertSource::Tls,
            chain: owned(chain),
            judged: Mutex::new(Vec::new()),
        })
    }
}

/// The SHA-256 fingerprints of the self-signed certificates registered to
/// `self_signed_tls_client_auth` clients: with `client_auth = "required"`, the only
/// self-signed certificates a handshake accepts. Read from the store at start and again
/// whenever a client changes.
#[derive(Debug, Default)]
pub(crate) struct SelfSignedPins(RwLock<Arc<HashSet<[u8; 32]>>>);

impl SelfSignedPins {
    /// Whether `fingerprint` is registered.
    pub(crate) fn contains(&self, fingerprint: &[u8; 32]) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(fingerprint)
    }

    /// Replaces the set.
    pub(crate) fn replace(&self, pins: HashSet<[u8; 32]>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pins);
    }
}

/// The handshake's verifier: the CA's, with self-signed certificates let through to be
/// judged later — with `mandatory`, only those in `pins` (see the module documentation).
#[derive(Debug)]
struct CaOrSelfSigned {
    inner: Arc<dyn ClientCertVerifier>,
    mandatory: bool,
    pins: Arc<SelfSignedPins>,
}

impl ClientCertVerifier for CaOrSelfSigned {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(v) => Ok(v),
            Err(e) => {
                let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
                let self_signed = intermediates.is_empty()
                    && CertIdentity::from_der(end_entity.as_ref()).is_ok_and(|c| {
                        c.self_issued
                            && c.valid_at(now)
                            && (!self.mandatory || self.pins.contains(&c.fingerprint))
                    });
                if self_signed {
                    Ok(ClientCertVerified::assertion())
                } else {
                    Err(e)
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Builds the rustls configuration of `settings`, reading its files.
pub(crate) fn server_config(
    settings: &TlsSettings,
    pins: &Arc<SelfSignedPins>,
) -> Result<(Arc<ServerConfig>, Option<Arc<ClientCa>>), TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert)
        .map_err(|e| err("cert", &settings.cert, format!("{e:?}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            err(
                "cert",
                &settings.cert,
                format!("not PEM certificates ({e:?})"),
            )
        })?;
    if chain.is_empty() {
        return Err(err(
            "cert",
            &settings.cert,
            "holds no PEM CERTIFICATE block",
        ));
    }
    if let Some(leaf) = chain.first()
        && let Err(e) = CertIdentity::from_der(leaf.as_ref())
    {
        return Err(err("cert", &settings.cert, e));
    }
    // The PEM error is not shown: its Debug can quote a line of the file, which is key
    // material.
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::Io(io) => io.to_string(),
            _ => "no readable PEM private key (PKCS#8, SEC1 or PKCS#1)".into(),
        };
        err("key", &settings.key, why)
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err("cert", &settings.cert, e))?;
    let (builder, ca) = match &settings.client_ca {
        Some(path) => {
            let ca = Arc::new(ClientCa::load_with_crls(
                path,
                settings.client_crl.as_deref(),
            )?);
            let verifier = CaOrSelfSigned {
                inner: ca.verifier.clone(),
                mandatory: settings.client_auth == ClientAuth::Required,
                pins: pins.clone(),
            };
            (
                builder.with_client_cert_verifier(Arc::new(verifier)),
                Some(ca),
            )
        }
        None => (builder.with_no_client_auth(), None),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        err(
            "key",
            &settings.key,
            format!("does not go with the certificate ({e})"),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if settings.client_ca.is_some() {
        // A resumed session skips the certificate verifier: a client whose certificate was
        // since revoked, unregistered or dropped from `client_ca` could go on resuming (and
        // chaining tickets) for as long as the ticket lives. With client certificates in
        // play, every connection makes a full handshake.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok((Arc::new(config), ca))
}

/// The current TLS configuration, replaced when the files change.
#[derive(Debug)]
pub(crate) struct TlsState {
    settings: TlsSettings,
    /// The registered self-signed certificates (`client_auth = "required"`).
    pub pins: Arc<SelfSignedPins>,
    current: RwLock<(Arc<ServerConfig>, Option<Arc<ClientCa>>)>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl TlsState {
    /// Loads `settings`.
    pub(crate) fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        let pins = Arc::new(SelfSignedPins::default());
        let current = server_config(settings, &pins)?;
        Ok(Self {
            pins,
            stamps: Mutex::new(stamps(settings)),
            settings: settings.clone(),
            current: RwLock::new(current),
        })
    }

    /// The configuration for a new connection, and the CA its client certificate is
    /// judged by.
    pub(crate) fn current(&self) -> (Arc<ServerConfig>, Option<Arc<ClientCa>>) {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the files again; on failure the previous configuration stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let next = server_config(&self.settings, &self.pins)?;
        if let Ok(mut s) = self.stamps.lock() {
            *s = stamps(&self.settings);
        }
        match self.current.write() {
            Ok(mut c) => *c = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    fn changed(&self) -> bool {
        let now = stamps(&self.settings);
        self.stamps.lock().map(|s| *s != now).unwrap_or(true)
    }

    /// Reloads on SIGHUP and when a file's modification time changes, until `shutdown`.
    pub(crate) async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let why = tokio::select! {
                _ = hangup => "SIGHUP",
                _ = tick.tick() => {
                    if !self.changed() {
                        continue;
                    }
                    "a changed file"
                }
                _ = shutdown.changed() => return,
            };
            match self.reload() {
                Ok(()) => tracing::info!(reason = why, "TLS certificates reloaded"),
                Err(e) => {
                    // Do not try the same broken files every 2 s: wait for the next change.
                    if let Ok(mut s) = self.stamps.lock() {
                        *s = stamps(&self.settings);
                    }
                    tracing::error!(reason = why, error = %e, "cannot reload the TLS certificates; keeping the previous ones");
                }
            }
        }
    }
}

fn stamps(s: &TlsSettings) -> Vec<Option<SystemTime>> {
    let files: [Option<&PathBuf>; 4] = [
        Some(&s.cert),
        Some(&s.key),
        s.client_ca.as_ref(),
        s.client_crl.as_ref(),
    ];
    files
        .iter()
        .map(|f| f.and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()))
        .collect()
}
