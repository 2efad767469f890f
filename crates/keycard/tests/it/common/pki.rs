//! Test certificates, made by the test (rcgen): a CA, a server certificate for 127.0.0.1,
//! client certificates with the names a test needs, expired ones, one from another CA, and
//! self-signed ones. Written as PEM files into a temporary folder.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// The certificate's DER.
    pub der: Vec<u8>,
}

impl Issued {
    /// SHA-256 of the DER, lowercase hex (what `keycard cert add` prints).
    pub fn fingerprint(&self) -> String {
        keycard_core::cert::CertIdentity::from_der(&self.der)
            .unwrap()
            .fingerprint_hex()
    }
}

/// What a client certificate says.
#[derive(Debug, Default, Clone)]
pub struct Names<'a> {
    /// The subject CN.
    pub cn: &'a str,
    /// The subject O, if any.
    pub org: Option<&'a str>,
    /// SAN URIs (SPIFFE IDs).
    pub uris: &'a [&'a str],
    /// SAN DNS names.
    pub dns: &'a [&'a str],
    /// Expired a long time ago.
    pub expired: bool,
}

/// A CA and the folder its certificates go to.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
}

impl Pki {
    /// A new CA named `name`, writing into `dir`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.join(format!("{name}.pem"));
        std::fs::write(&ca, cert.pem()).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    fn write(&self, file: &str, cert: &rcgen::Certificate, key: &KeyPair) -> Issued {
        let (c, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        Issued {
            cert: c,
            key: k,
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self, file: &str) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        p.distinguished_name
            .push(DnType::CommonName, "keycard test server");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        self.write(file, &cert, &key)
    }

    /// A client certificate with `names`.
    pub fn client(&self, file: &str, names: &Names<'_>) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = client_params(names).signed_by(&key, &self.issuer).unwrap();
        self.write(file, &cert, &key)
    }

    /// A self-signed client certificate with `names`.
    pub fn self_signed(&self, file: &str, names: &Names<'_>) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = client_params(names).self_signed(&key).unwrap();
        self.write(file, &cert, &key)
    }
}

fn client_params(n: &Names<'_>) -> CertificateParams {
    let mut p =
        CertificateParams::new(n.dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>()).unwrap();
    for u in n.uris {
        p.subject_alt_names
            .push(SanType::URI((*u).try_into().unwrap()));
    }
    p.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(o) = n.org {
        p.distinguished_name.push(DnType::OrganizationName, o);
    }
    p.distinguished_name.push(DnType::CommonName, n.cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if n.expired {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    }
    p
}
