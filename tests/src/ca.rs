//! A certificate authority generated at test time, issuing the policy hosts' server
//! certificates (RFC 8461 §3.3: the policy host must present a valid PKIX certificate,
//! RFC 5280, for `mta-sts.<domain>`).

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};

/// Whether an issued certificate is within its validity period (RFC 5280 §4.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Valid from 2020 to 2200.
    Valid,
    /// Valid only during the year 2000: expired now.
    Expired,
}

/// A self-signed CA with its signing key; every `TestCa` is a different, unrelated CA, so a
/// second one serves as the "untrusted" CA.
pub struct TestCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    name: String,
}

impl TestCa {
    /// Generates a new CA whose subject common name is `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2200, 1, 1);
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            name: name.to_string(),
        }
    }

    /// The CA certificate in PEM, to be trusted by clients.
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the CA certificate to `<dir>/<name>.pem` (the `ca_file` of the daemon config).
    pub fn write_ca_file(&self, dir: &Path) -> PathBuf {
        let safe: String = self
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = dir.join(format!("{safe}.pem"));
        std::fs::write(&path, &self.cert_pem).expect("write CA file");
        path
    }

    /// Issues a server certificate for `dns_names` (subjectAltName dNSName entries, RFC 6125),
    /// returning (certificate chain PEM: leaf then CA, PKCS#8 private key PEM).
    pub fn issue(&self, dns_names: &[&str], validity: Validity) -> (String, String) {
        let key = KeyPair::generate().expect("generate server key");
        let cert = server_params(dns_names, validity)
            .signed_by(&key, &self.issuer)
            .expect("sign server cert");
        (
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
        )
    }

    /// Issues a certificate as in [`TestCa::issue`] and loads it as a native-tls server identity.
    pub fn identity(&self, dns_names: &[&str], validity: Validity) -> native_tls::Identity {
        let (chain, key) = self.issue(dns_names, validity);
        native_tls::Identity::from_pkcs8(chain.as_bytes(), key.as_bytes())
            .expect("load issued certificate into native-tls")
    }
}

/// A server certificate with what a DANE record matches (RFC 6698 §2.1.3).
pub struct ServerCert {
    /// The certificate chain and key, loaded for a TLS server.
    pub identity: native_tls::Identity,
    /// The DER SubjectPublicKeyInfo: the data of a TLSA record with selector SPKI(1).
    pub spki_der: Vec<u8>,
}

/// A self-signed certificate for `dns_names`, valid from 2020 to 2200: no CA vouches for it,
/// so only DANE-EE (RFC 7672 §3.1.1) can make it trusted.
pub fn self_signed(dns_names: &[&str]) -> ServerCert {
    let key = KeyPair::generate().expect("generate server key");
    let cert = server_params(dns_names, Validity::Valid)
        .self_signed(&key)
        .expect("self-sign server cert");
    let identity =
        native_tls::Identity::from_pkcs8(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
            .expect("load self-signed certificate into native-tls");
    ServerCert {
        identity,
        spki_der: key.subject_public_key_info(),
    }
}

/// The parameters of a server certificate for `dns_names` (the first is also the common name).
fn server_params(dns_names: &[&str], validity: Validity) -> CertificateParams {
    let names: Vec<String> = dns_names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("server cert params");
    let cn = dns_names.first().copied().unwrap_or("no-name.invalid");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    match validity {
        Validity::Valid => {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2200, 1, 1);
        }
        Validity::Expired => {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
    }
    params
}
