//! The names a client certificate gives its holder: its subject's common names and its DNS
//! subject alternative names, which the users file's `certificate_names` map to users (etcd
//! maps the common name alike). The TLS layer has already verified the certificate.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// Common names first, then DNS names; empty when the certificate does not parse.
pub fn names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        names.extend(san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        }));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_and_dns_names_are_read() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["app.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "app-client");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(names(cert.der()), ["app-client", "app.example"]);
        assert!(names(&CertificateDer::from(vec![1, 2, 3])).is_empty());
    }
}
