//! `--web.config.file`: TLS and basic auth in the Prometheus exporter
//! toolkit's web configuration format, so that one file serves
//! node_exporter and iolens alike:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths: to this file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert, VerifyClientCertIfGiven
//!   client_ca_file: ca.crt
//!   min_version: TLS12             # TLS12 (default) or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt hashes
//! ```
//!
//! Unknown keys are errors. Keys the toolkit knows but iolens does not do
//! (inline certificates, cipher suites, curves, allowed SANs, extra
//! headers) are errors that say so, rather than settings silently ignored.
//! The file is read once, at start.

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    // The toolkit's, not done here: refused by name below.
    cert: Option<serde_yaml::Value>,
    key: Option<serde_yaml::Value>,
    client_ca: Option<serde_yaml::Value>,
    cipher_suites: Option<serde_yaml::Value>,
    prefer_server_cipher_suites: Option<serde_yaml::Value>,
    curve_preferences: Option<serde_yaml::Value>,
    client_allowed_sans: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    http2: Option<bool>,
    headers: Option<serde_yaml::Value>,
}

/// The endpoint's TLS and users, ready to serve.
pub struct WebConfig {
    /// None: plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// User name to bcrypt hash; empty: no authentication.
    users: BTreeMap<String, String>,
    /// (user, password) pairs that verified: bcrypt costs tens of
    /// milliseconds a check, and Prometheus sends the same pair each scrape.
    verified: Mutex<HashSet<(String, String)>>,
    /// bcrypt checks at once: wrong passwords cannot take more than this
    /// many cores, and a remembered pair never waits for them.
    pub bcrypt_slots: tokio::sync::Semaphore,
}

/// bcrypt checks that may run at once.
const BCRYPT_SLOTS: usize = 2;

/// A valid bcrypt hash (of nothing anyone knows) to check against when the
/// user does not exist, so a missing user costs as long as a wrong password.
const DUMMY_HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

/// At most this many verified pairs are remembered (then forgotten at once).
const VERIFIED_CACHE: usize = 64;

impl WebConfig {
    /// Reads and checks the file; the error is one line naming what is wrong.
    pub fn load(path: &Path) -> Result<WebConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        let file: FileConfig = if text.trim().is_empty() {
            FileConfig::default()
        } else {
            serde_yaml::from_str(&text).map_err(|e| e.to_string())?
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = match file.tls_server_config {
            Some(t) => tls_config(t, dir)?,
            None => None,
        };
        if let Some(h) = file.http_server_config {
            if h.headers.is_some() {
                return Err("http_server_config.headers is not supported by iolens".into());
            }
            if h.http2 == Some(true) {
                return Err(
                    "http_server_config.http2: iolens serves HTTP/1.1 only; remove it or set false"
                        .into(),
                );
            }
        }
        let users = file.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if user.contains(':') {
                return Err(format!(
                    "basic_auth_users: user `{user}` contains `:`, which basic auth cannot carry"
                ));
            }
            hash.parse::<bcrypt::HashParts>().map_err(|e| {
                format!(
                    "basic_auth_users.{user}: not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                )
            })?;
        }
        Ok(WebConfig {
            tls,
            users,
            ..WebConfig::default()
        })
    }

    pub fn needs_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether the header carries a pair that verified before (no bcrypt).
    pub fn remembered(&self, header: Option<&[u8]>) -> bool {
        credentials(header).is_some_and(|pair| {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&pair)
        })
    }

    /// Whether an `Authorization` header value names a configured user with
    /// the right password. Blocking (bcrypt): call off the async threads.
    pub fn authorized(&self, header: Option<&[u8]>) -> bool {
        let Some(pair) = credentials(header) else {
            return false;
        };
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&pair)
        {
            return true;
        }
        let (hash, known) = match self.users.get(&pair.0) {
            Some(h) => (h.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let ok = bcrypt::verify(&pair.1, hash).unwrap_or(false) && known;
        if ok {
            let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() >= VERIFIED_CACHE {
                v.clear();
            }
            v.insert(pair);
        }
        ok
    }
}

impl Default for WebConfig {
    fn default() -> WebConfig {
        WebConfig {
            tls: None,
            users: BTreeMap::new(),
            verified: Mutex::new(HashSet::new()),
            bcrypt_slots: tokio::sync::Semaphore::new(BCRYPT_SLOTS),
        }
    }
}

/// (user, password) of a `Basic` Authorization header.
fn credentials(header: Option<&[u8]>) -> Option<(String, String)> {
    use base64::Engine as _;
    header
        .and_then(|h| h.strip_prefix(b"Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
}

fn tls_config(t: TlsFile, dir: &Path) -> Result<Option<Arc<ServerConfig>>, String> {
    for (key, set) in [
        ("cert", t.cert.is_some()),
        ("key", t.key.is_some()),
        ("client_ca", t.client_ca.is_some()),
        ("cipher_suites", t.cipher_suites.is_some()),
        (
            "prefer_server_cipher_suites",
            t.prefer_server_cipher_suites.is_some(),
        ),
        ("curve_preferences", t.curve_preferences.is_some()),
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
    ] {
        if set {
            return Err(format!(
                "tls_server_config.{key} is not supported by iolens (inline certificates: use cert_file/key_file/client_ca_file; rustls chooses suites and curves)"
            ));
        }
    }
    let (cert_file, key_file) = match (t.cert_file, t.key_file) {
        // As the toolkit does: a TLS section without a certificate is
        // plain HTTP.
        (None, None) if t.client_ca_file.is_none() && t.client_auth_type.is_none() => {
            return Ok(None);
        }
        (Some(c), Some(k)) => (dir.join(c), dir.join(k)),
        (None, _) => return Err("tls_server_config: cert_file is missing".into()),
        (_, None) => return Err("tls_server_config: key_file is missing".into()),
    };
    let certs = read_certs(&cert_file, "cert_file")?;
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .map_err(|e| format!("tls_server_config.key_file {}: {e}", key_file.display()))?;

    let version = |v: &Option<String>, key: &str| -> Result<Option<u8>, String> {
        match v.as_deref() {
            None => Ok(None),
            Some("TLS12") => Ok(Some(2)),
            Some("TLS13") => Ok(Some(3)),
            Some(other) => Err(format!(
                "tls_server_config.{key}: `{other}` is not one iolens offers (TLS12 or TLS13)"
            )),
        }
    };
    let min = version(&t.min_version, "min_version")?.unwrap_or(2);
    let max = version(&t.max_version, "max_version")?.unwrap_or(3);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();
    if versions.is_empty() {
        return Err("tls_server_config: min_version is above max_version".into());
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let roots = || -> Result<Arc<RootCertStore>, String> {
        let Some(ca) = &t.client_ca_file else {
            return Err(format!(
                "tls_server_config: client_auth_type {auth} needs client_ca_file"
            ));
        };
        let mut store = RootCertStore::empty();
        for c in read_certs(&dir.join(ca), "client_ca_file")? {
            store
                .add(c)
                .map_err(|e| format!("tls_server_config.client_ca_file {ca}: {e}"))?;
        }
        Ok(Arc::new(store))
    };
    let builder = match auth {
        "NoClientCert" => builder.with_no_client_auth(),
        "VerifyClientCertIfGiven" | "RequireAndVerifyClientCert" => {
            let v = WebPkiClientVerifier::builder_with_provider(roots()?, Arc::clone(&provider));
            let v = if auth == "VerifyClientCertIfGiven" {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?,
            )
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(format!(
                "tls_server_config.client_auth_type {auth} (a client certificate taken unverified) is not supported by iolens; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
            ));
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: `{other}` is not one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
            ));
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: the certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls_server_config.{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.{key} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<WebConfig, String> {
        let dir = std::env::temp_dir().join(format!("iolens-webcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join(format!(
            "{:x}.yml",
            yaml.len() * 31 + yaml.bytes().map(usize::from).sum::<usize>()
        ));
        std::fs::write(&p, yaml).expect("write");
        let r = WebConfig::load(&p);
        let _ = std::fs::remove_file(&p);
        r
    }

    #[test]
    fn empty_and_auth_only_files_load() {
        let c = load("").expect("empty");
        assert!(c.tls.is_none() && !c.needs_auth());
        let hash = bcrypt::hash("secret", 4).expect("hash");
        let c = load(&format!("basic_auth_users:\n  prom: '{hash}'\n")).expect("auth");
        assert!(c.needs_auth());
        use base64::Engine as _;
        let b = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(!c.remembered(Some(b("prom:secret").as_bytes())));
        assert!(c.authorized(Some(b("prom:secret").as_bytes())));
        assert!(c.remembered(Some(b("prom:secret").as_bytes())), "cached");
        assert!(c.authorized(Some(b("prom:secret").as_bytes())));
        assert!(!c.authorized(Some(b("prom:wrong").as_bytes())));
        assert!(!c.remembered(Some(b("prom:wrong").as_bytes())));
        assert!(!c.authorized(Some(b("nobody:secret").as_bytes())));
        assert!(!c.authorized(Some(b"Bearer x")));
        assert!(!c.authorized(None));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        for (yaml, needle) in [
            ("tls_server_confg: {}\n", "unknown field `tls_server_confg`"),
            (
                "tls_server_config:\n  cert_fil: x\n",
                "unknown field `cert_fil`",
            ),
            ("basic_auth_users:\n  prom: plain\n", "not a bcrypt hash"),
            (
                "tls_server_config:\n  cert_file: x\n",
                "key_file is missing",
            ),
            (
                "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
                "cert_file /nonexistent.crt",
            ),
            (
                "tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                "cipher_suites is not supported",
            ),
            ("basic_auth_users: [a, b]\n", "basic_auth_users"),
            (": : :\n", "did not find expected key"),
        ] {
            let e = load(yaml)
                .err()
                .unwrap_or_else(|| panic!("{yaml:?} loaded"));
            assert!(e.contains(needle), "{yaml:?}: {e}");
            assert_eq!(e.lines().count(), 1, "one line: {e}");
        }
    }
}
