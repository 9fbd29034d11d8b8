//! `portcullis certs init DIR`: the private CA and the services' certificates it writes
//! (files, modes, names, signatures) and its refusal to overwrite. That a certificate it makes
//! serves TLS that `portcullis health` trusts through the CA is in `client.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{TempDir, portcullis};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

/// The services (and the NATS server) that get a certificate by default.
const NAMES: [&str; 6] = [
    "policy-store",
    "admission",
    "signature",
    "continuous",
    "telemetry",
    "nats",
];

fn read_pem(path: &Path) -> Pem {
    let bytes = std::fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).unwrap();
    pem
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The DNS names and IP addresses (as text) of a certificate's SAN extension.
fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let ext = cert.subject_alternative_name().unwrap().expect("a SAN extension");
    ext.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => (*dns).to_owned(),
            GeneralName::IPAddress(ip) => ip.iter().map(u8::to_string).collect::<Vec<_>>().join("."),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

#[test]
fn init_writes_a_ca_and_a_certificate_per_service_signed_by_it() {
    let dir = TempDir::new("certs-init");
    let out = dir.path("certs");
    let run = portcullis(&[
        "certs",
        "init",
        out.to_str().unwrap(),
        "--san",
        "policy.portcullis.example",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // Each file written is printed, one a line.
    assert_eq!(run.stdout.lines().count(), 2 + 2 * NAMES.len(), "{}", run.stdout);

    let ca_pem = read_pem(&out.join("ca.crt"));
    let ca = ca_pem.parse_x509().unwrap();
    assert!(ca.is_ca(), "ca.crt is a CA certificate");
    ca.verify_signature(None).expect("the CA is self-signed");
    assert_eq!(mode(&out.join("ca.crt")), 0o644);
    assert_eq!(mode(&out.join("ca.key")), 0o600);

    for name in NAMES {
        let crt = out.join(format!("{name}.crt"));
        let key = out.join(format!("{name}.key"));
        assert_eq!(mode(&crt), 0o644, "{name}.crt");
        assert_eq!(mode(&key), 0o600, "{name}.key");
        assert!(
            std::fs::read_to_string(&key).unwrap().contains("PRIVATE KEY"),
            "{name}.key is a PEM private key"
        );
        let pem = read_pem(&crt);
        let cert = pem.parse_x509().unwrap();
        assert!(!cert.is_ca(), "{name}.crt is no CA");
        cert.verify_signature(Some(ca.public_key()))
            .unwrap_or_else(|e| panic!("{name}.crt is signed by ca.crt: {e:?}"));
        assert_eq!(cert.issuer(), ca.subject(), "{name}");
        assert_eq!(
            sans(&cert),
            vec![name, "localhost", "127.0.0.1", "policy.portcullis.example"],
            "{name}"
        );
        assert!(cert.validity().is_valid(), "{name}.crt is valid now");
    }
    // Not signed by another CA: a second run into another folder makes a different CA.
    let other = dir.path("other");
    assert_eq!(portcullis(&["certs", "init", other.to_str().unwrap()]).code, Some(0));
    let other_ca_pem = read_pem(&other.join("ca.crt"));
    let other_ca = other_ca_pem.parse_x509().unwrap();
    let admission_pem = read_pem(&out.join("admission.crt"));
    let admission = admission_pem.parse_x509().unwrap();
    assert!(admission.verify_signature(Some(other_ca.public_key())).is_err());
}

#[test]
fn init_refuses_to_overwrite_unless_forced() {
    let dir = TempDir::new("certs-overwrite");
    let out = dir.path("certs");
    let out_arg = out.to_str().unwrap();
    assert_eq!(
        portcullis(&["certs", "init", out_arg, "--name", "admission"]).code,
        Some(0)
    );
    let ca_before = std::fs::read(out.join("ca.crt")).unwrap();
    let key_before = std::fs::read(out.join("admission.key")).unwrap();

    let again = portcullis(&["certs", "init", out_arg, "--name", "admission"]);
    assert_eq!(again.code, Some(2), "{}", again.stderr);
    assert!(again.stderr.contains("already exist"), "{}", again.stderr);
    assert!(again.stderr.contains("ca.crt"), "{}", again.stderr);
    assert_eq!(std::fs::read(out.join("ca.crt")).unwrap(), ca_before);
    assert_eq!(std::fs::read(out.join("admission.key")).unwrap(), key_before);

    // --if-missing: everything is there, nothing is written, success (compose's init service).
    let kept = portcullis(&["certs", "init", out_arg, "--name", "admission", "--if-missing"]);
    assert_eq!(kept.code, Some(0), "{}", kept.stderr);
    assert_eq!(kept.stdout, "");
    assert_eq!(std::fs::read(out.join("ca.crt")).unwrap(), ca_before);
    // ... but a partial set is not silently completed with a new CA.
    std::fs::remove_file(out.join("admission.crt")).unwrap();
    let partial = portcullis(&["certs", "init", out_arg, "--name", "admission", "--if-missing"]);
    assert_eq!(partial.code, Some(2), "{}", partial.stderr);
    assert!(!out.join("admission.crt").exists());

    // A file that is not ours is not replaced either; --force replaces everything.
    std::fs::set_permissions(out.join("admission.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let forced = portcullis(&["certs", "init", out_arg, "--name", "admission", "--force"]);
    assert_eq!(forced.code, Some(0), "{}", forced.stderr);
    assert_ne!(std::fs::read(out.join("ca.crt")).unwrap(), ca_before, "a new CA");
    assert_ne!(std::fs::read(out.join("admission.key")).unwrap(), key_before);
    assert_eq!(mode(&out.join("admission.key")), 0o600, "forced keys are 0600 too");
}

#[test]
fn init_refuses_names_that_are_not_dns_labels() {
    let dir = TempDir::new("certs-names");
    let out = dir.path("certs");
    for bad in ["../escape", "Upper", "ca", "", "-lead"] {
        let run = portcullis(&["certs", "init", out.to_str().unwrap(), "--name", bad]);
        assert_eq!(run.code, Some(2), "{bad:?}: {}", run.stderr);
        assert!(!out.exists(), "{bad:?}: nothing written");
    }
}
