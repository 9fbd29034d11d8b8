//! `portcullis certs init DIR`: a private CA and a certificate with its key for each service
//! of distributed mode (and the NATS server), so that services talk TLS to each other off
//! loopback from the first start (`docker-compose.yml` runs it once as an init service).
//!
//! Choices: ECDSA P-256 keys (what rustls and NATS accept everywhere); a CA valid 10 years and
//! service certificates valid `--days` (default 397, the longest public CAs issue); each
//! service certificate names its compose/Kubernetes service name, `localhost` and `127.0.0.1`
//! (health probes run inside the container) plus every `--san`, with both `serverAuth` and
//! `clientAuth` usages (NATS can require client certificates). Keys are written mode 0600 and
//! nothing is overwritten without `--force`: a second run would otherwise silently replace a
//! CA that services already trust. The CA key stays in DIR to issue more certificates later;
//! keep DIR where only Portcullis reads it (or use your own PKI and only the `server.tls_*`
//! settings).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::ExitStatus;

/// The names certificates are issued for by default: the five services and the NATS server,
/// as `docker-compose.yml` and `deploy/` name them.
pub const DEFAULT_NAMES: [&str; 6] = [
    "policy-store",
    "admission",
    "signature",
    "continuous",
    "telemetry",
    "nats",
];

/// How long the CA is valid.
const CA_DAYS: i64 = 3650;

/// `portcullis certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Makes a private CA (`ca.crt`, `ca.key`) and a certificate and key per service
    /// (`NAME.crt`, `NAME.key`) in DIR; keys mode 0600; refuses to overwrite without --force.
    /// Prints the files written.
    Init(InitArgs),
}

/// Arguments of `certs init`.
#[derive(Debug, Args)]
struct InitArgs {
    /// The folder to write to (created when missing).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The services to issue certificates for; each certificate names its service (a DNS name)
    /// [default: policy-store, admission, signature, continuous, telemetry, nats].
    #[arg(long = "name", value_name = "NAME")]
    names: Vec<String>,
    /// Another DNS name or IP address every service certificate also carries (e.g. a
    /// Kubernetes `policy-store.portcullis.svc`); repeatable.
    #[arg(long = "san", value_name = "NAME")]
    sans: Vec<String>,
    /// Days the service certificates are valid.
    #[arg(long, value_name = "N", default_value_t = 397, value_parser = clap::value_parser!(u16).range(1..=3650))]
    days: u16,
    /// Replaces files that already exist (a new CA: every service must be given the new files).
    #[arg(long, conflicts_with = "if_missing")]
    force: bool,
    /// Writes nothing and succeeds when every file is already there (an init container run
    /// at each start); some but not all of them is still an error.
    #[arg(long)]
    if_missing: bool,
}

/// Runs `certs`.
pub fn run(args: &CertsArgs) -> Result<ExitStatus> {
    match &args.command {
        CertsCommand::Init(init) => {
            let written = init_dir(init)?;
            let mut stdout = std::io::stdout().lock();
            for path in written {
                writeln!(stdout, "{}", path.display()).context("writing to stdout")?;
            }
            Ok(ExitStatus::Ok)
        }
    }
}

/// One file to write: its name in DIR, its contents, whether it is a private key.
struct Output {
    name: String,
    contents: String,
    secret: bool,
}

fn init_dir(args: &InitArgs) -> Result<Vec<PathBuf>> {
    let names: Vec<String> = if args.names.is_empty() {
        DEFAULT_NAMES.iter().map(|n| (*n).to_owned()).collect()
    } else {
        args.names.clone()
    };
    for name in &names {
        // The name becomes a file name and a DNS name: keep it to what both allow.
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name != "ca";
        if !valid {
            anyhow::bail!("--name {name:?}: expected a DNS label (a-z, 0-9, '-'), not \"ca\"");
        }
    }
    let outputs = issue(&names, &args.sans, i64::from(args.days))?;
    if !args.force {
        let existing: Vec<String> = outputs
            .iter()
            .map(|o| args.dir.join(&o.name))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if args.if_missing && existing.len() == outputs.len() {
            return Ok(Vec::new());
        }
        if !existing.is_empty() {
            anyhow::bail!(
                "{} already exist; nothing written (--force replaces them, and makes a new CA)",
                existing.join(", ")
            );
        }
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let mut written = Vec::with_capacity(outputs.len());
    for output in &outputs {
        let path = args.dir.join(&output.name);
        write_file(&path, &output.contents, output.secret, args.force)?;
        written.push(path);
    }
    Ok(written)
}

/// The CA and every service's certificate, as PEM files.
fn issue(names: &[String], sans: &[String], days: i64) -> Result<Vec<Output>> {
    let now = OffsetDateTime::now_utc();
    // A little back-dating absorbs clock skew between the host that issues and those that check.
    let not_before = now - Duration::hours(1);

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis private CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "Portcullis");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = now + Duration::days(CA_DAYS);
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).context("signing the CA certificate")?;

    let mut outputs = vec![
        Output {
            name: "ca.crt".to_owned(),
            contents: ca.pem(),
            secret: false,
        },
        Output {
            name: "ca.key".to_owned(),
            contents: ca_key_pem,
            secret: true,
        },
    ];
    for name in names {
        let mut alt_names = vec![name.clone(), "localhost".to_owned(), "127.0.0.1".to_owned()];
        for san in sans {
            if !alt_names.contains(san) {
                alt_names.push(san.clone());
            }
        }
        let mut params =
            CertificateParams::new(alt_names).with_context(|| format!("the names of {name}'s certificate"))?;
        params.distinguished_name.push(DnType::CommonName, name.as_str());
        params.distinguished_name.push(DnType::OrganizationName, "Portcullis");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = now + Duration::days(days);
        let key = KeyPair::generate().with_context(|| format!("generating {name}'s key"))?;
        let cert = params
            .signed_by(&key, &ca)
            .with_context(|| format!("signing {name}'s certificate"))?;
        outputs.push(Output {
            name: format!("{name}.crt"),
            contents: cert.pem(),
            secret: false,
        });
        outputs.push(Output {
            name: format!("{name}.key"),
            contents: key.serialize_pem(),
            secret: true,
        });
    }
    Ok(outputs)
}

/// Writes `contents` to `path`: keys mode 0600 from the first byte (and after `--force` too,
/// whatever the old file's mode), certificates 0644; without `force` an existing file is an
/// error even if it appeared since the check.
fn write_file(path: &Path, contents: &str, secret: bool, force: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mode = if secret { 0o600 } else { 0o644 };
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
