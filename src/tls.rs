//! TLS on SSL and SASL_SSL listeners, with rustls (ring for the cryptography: no OpenSSL).
//!
//! The connection's turn stays what it is on a plaintext listener (non-blocking `recv` and
//! `send` on the socket, requests cut from a plaintext read buffer, answers gathered in a
//! plaintext write buffer); a [`Session`] sits between the socket and those buffers. What the
//! socket gives goes through [`Session::feed`] into the read buffer; what the write buffer holds
//! goes through [`Session::seal`] into the session's own buffer of TLS records, which is what
//! the connection sends. The handshake needs nothing else: its records come and go the same
//! way, before any plaintext does.
//!
//! Memory per connection is bounded: the plaintext moved into rustls at a time is at most
//! `limits::TLS_SEAL_BYTES`, and nothing more is moved while sealed records wait for the socket.

use crate::config::limits;
use bytes::{Buf, BufMut, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// The certificate (with its chain), its key, and the CA that client certificates must chain
/// to, if clients must present one (mutual TLS).
pub struct Files<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: Option<&'a Path>,
}

/// The cryptography kelp's TLS runs on (its tests' clients use it too).
// ring, not aws-lc-rs: it builds with the C compiler alone, in seconds, where aws-lc needs
// a much longer native build in every CI run. rustls marks ring's provider deprecated for
// its lack of post-quantum key exchange (X25519MLKEM768); the classical groups it offers
// (X25519, P-256, P-384) are what Kafka clients negotiate today (Java 17's JSSE offers no
// hybrid group at all).
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the PEM files and builds the server's TLS settings (TLS 1.2 and 1.3, rustls's safe
/// defaults). Every error names the file it came from.
pub fn load(files: &Files) -> Result<Arc<ServerConfig>, String> {
    let provider = provider();
    let chain = read_certs(files.cert)?;
    let key = PrivateKeyDer::from_pem_file(files.key)
        .map_err(|e| format!("--tls-key {}: {e}", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?;
    let builder = match files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "--tls-cert {} with --tls-key {}: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// A certificate's subject as Kafka names an SSL principal (RFC 2253, as Java's
/// `X500Principal.getName()` writes it): the last RDN first, `,` between RDNs, `+` inside one,
/// special characters escaped; `None` if the DER does not parse.
pub fn subject(der: &[u8]) -> Option<String> {
    use x509_parser::objects::{oid2abbrev, oid_registry};
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let registry = oid_registry();
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            let attrs: Vec<String> = rdn
                .iter()
                .map(|a| {
                    let oid = a.attr_type();
                    let name = oid2abbrev(oid, registry)
                        .map_or_else(|_| oid.to_id_string(), str::to_string);
                    format!("{name}={}", escape(a.as_str().unwrap_or("#")))
                })
                .collect();
            attrs.join("+")
        })
        .collect();
    Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

/// RFC 2253 escaping of an attribute value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.chars().count() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What feeding the socket's bytes through TLS found, beyond the plaintext it yielded.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// Go on.
    Open,
    /// The client said close_notify: it sends nothing more.
    Closed,
}

/// One connection's TLS state.
pub struct Session {
    tls: ServerConnection,
    /// Bytes read off the socket, not yet given to rustls.
    raw: BytesMut,
    /// TLS records waiting for the socket.
    out: BytesMut,
}

impl Session {
    pub fn new(config: Arc<ServerConfig>) -> Result<Session, String> {
        let tls = ServerConnection::new(config).map_err(|e| format!("TLS session: {e}"))?;
        Ok(Session {
            tls,
            raw: BytesMut::new(),
            out: BytesMut::new(),
        })
    }

    /// Whether the handshake is still going on.
    pub fn handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Where the connection reads the socket into; [`Session::feed`] takes it from there.
    pub fn raw(&mut self) -> &mut BytesMut {
        &mut self.raw
    }

    /// Takes what was read into [`Session::raw`], decrypts what it completes, and appends the
    /// plaintext to `plain`. A TLS error queues the alert that tells the client (send
    /// [`Session::pending`] before closing) and is returned.
    pub fn feed(&mut self, plain: &mut BytesMut) -> io::Result<Fed> {
        let raw = std::mem::take(&mut self.raw);
        let fed = self.decrypt(&raw, plain);
        // The buffer (now read whole) is kept for the next read.
        self.raw = raw;
        self.raw.clear();
        fed
    }

    fn decrypt(&mut self, mut raw: &[u8], plain: &mut BytesMut) -> io::Result<Fed> {
        let mut fed = Fed::Open;
        while !raw.is_empty() {
            // rustls takes at most one record's worth at a time; the rest waits for the loop.
            let n = self.tls.read_tls(&mut raw)?;
            let state = match self.tls.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    self.flush_records();
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            self.take_plaintext(plain, state.plaintext_bytes_to_read())?;
            if state.peer_has_closed() {
                fed = Fed::Closed;
            }
            if n == 0 {
                break;
            }
        }
        self.flush_records();
        Ok(fed)
    }

    fn take_plaintext(&mut self, plain: &mut BytesMut, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        plain.reserve(len);
        let mut w = plain.writer();
        let copied = io::copy(&mut self.tls.reader().take(len as u64), &mut w)?;
        debug_assert_eq!(copied as usize, len);
        Ok(())
    }

    /// Moves plaintext from `wbuf` into TLS records, unless records are still waiting for the
    /// socket (then the write buffer waits too: the client is not reading). Whether any moved.
    pub fn seal(&mut self, wbuf: &mut BytesMut) -> bool {
        if !self.out.is_empty() || wbuf.is_empty() || self.tls.is_handshaking() {
            return false;
        }
        let take = wbuf.len().min(limits::TLS_SEAL_BYTES);
        // Writing to a rustls connection's buffer only fails past its limit, which the slice
        // bounds; whatever it did take is taken off the write buffer.
        let n = self.tls.writer().write(&wbuf[..take]).unwrap_or(0);
        wbuf.advance(n);
        self.flush_records();
        n > 0
    }

    /// Moves every TLS record rustls has ready (handshake, data, alerts) into `out`.
    fn flush_records(&mut self) {
        let mut w = (&mut self.out).writer();
        while self.tls.wants_write() {
            // Writing into memory cannot fail.
            if self.tls.write_tls(&mut w).unwrap_or(0) == 0 {
                break;
            }
        }
    }

    /// The TLS records waiting for the socket.
    pub fn pending(&self) -> &[u8] {
        &self.out
    }

    /// `n` bytes of [`Session::pending`] reached the socket.
    pub fn sent(&mut self, n: usize) {
        self.out.advance(n);
    }

    /// The subject of the client's certificate, when one was required and verified: the
    /// connection's principal on an SSL listener with `--tls-client-ca`.
    pub fn peer_subject(&self) -> Option<String> {
        let cert = self.tls.peer_certificates()?.first()?;
        subject(cert.as_ref())
    }

    /// Says close_notify (queued in [`Session::pending`]).
    pub fn close(&mut self) {
        self.tls.send_close_notify();
        self.flush_records();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection};

    /// A self-signed certificate for "localhost" written to PEM files, kelp's settings loaded
    /// from them, and a client that trusts the certificate.
    fn settings(tag: &str) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("kelp-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let server = load(&Files {
            cert: &cert,
            key: &key,
            client_ca: None,
        })
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let mut roots = RootCertStore::empty();
        roots.add(made.cert.der().clone()).unwrap();
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, Arc::new(client))
    }

    /// Moves what the client has to send into the session (as the socket would) and returns
    /// the plaintext the session yields.
    fn client_to_server(client: &mut ClientConnection, server: &mut Session) -> BytesMut {
        let mut plain = BytesMut::new();
        while client.wants_write() {
            let mut w = server.raw().writer();
            client.write_tls(&mut w).unwrap();
            assert_eq!(server.feed(&mut plain).unwrap(), Fed::Open);
        }
        plain
    }

    /// Moves the session's pending records to the client; returns the plaintext it reads.
    fn server_to_client(server: &mut Session, client: &mut ClientConnection) -> Vec<u8> {
        let mut records = server.pending();
        let mut plain = Vec::new();
        while !records.is_empty() {
            client.read_tls(&mut records).unwrap();
            client.process_new_packets().unwrap();
            // WouldBlock once what arrived is read.
            let _ = client.reader().read_to_end(&mut plain);
        }
        let n = server.pending().len();
        server.sent(n);
        plain
    }

    fn handshake(server: &mut Session, client: &mut ClientConnection) {
        for _ in 0..10 {
            client_to_server(client, server);
            server_to_client(server, client);
            if !client.is_handshaking() && !server.handshaking() {
                return;
            }
        }
        panic!("no handshake after 10 round trips");
    }

    #[test]
    fn requests_and_large_answers_cross_with_bounded_sealed_bytes() {
        let (server_config, client_config) = settings("roundtrip");
        let mut server = Session::new(server_config).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_config, name).unwrap();
        handshake(&mut server, &mut client);

        let request: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut plain = BytesMut::new();
        for chunk in request.chunks(30_000) {
            client.writer().write_all(chunk).unwrap();
            plain.extend(client_to_server(&mut client, &mut server));
        }
        assert_eq!(&plain[..], &request[..]);

        // An answer of 1 MiB: sealed a bounded slice at a time, and nothing more while the
        // sealed records wait for the socket.
        let answer: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut wbuf = BytesMut::from(&answer[..]);
        let mut got = Vec::new();
        while !wbuf.is_empty() {
            assert!(server.seal(&mut wbuf));
            assert!(!server.seal(&mut wbuf), "sealed more while records wait");
            assert!(server.pending().len() <= limits::TLS_SEAL_BYTES + 1024);
            got.extend(server_to_client(&mut server, &mut client));
        }
        assert_eq!(got, answer);
    }

    #[test]
    fn garbage_is_refused_with_an_alert_and_close_notify_ends_the_stream() {
        let (server_config, client_config) = settings("garbage");
        let mut server = Session::new(server_config.clone()).unwrap();
        server
            .raw()
            .extend_from_slice(b"\x00\x00\x00\x10plaintext kafka!");
        let mut plain = BytesMut::new();
        assert!(server.feed(&mut plain).is_err());
        assert!(plain.is_empty());
        assert_eq!(server.pending().first(), Some(&0x15), "a TLS alert record");

        let mut server = Session::new(server_config).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_config, name).unwrap();
        handshake(&mut server, &mut client);
        client.send_close_notify();
        let mut plain = BytesMut::new();
        let mut w = server.raw().writer();
        client.write_tls(&mut w).unwrap();
        assert_eq!(server.feed(&mut plain).unwrap(), Fed::Closed);
    }

    #[test]
    fn a_subject_reads_as_kafka_names_an_ssl_principal() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kelp, client");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "kelp");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject(cert.der()).as_deref(),
            Some("O=kelp,CN=kelp\\, client")
        );
        assert_eq!(subject(b"not a certificate"), None);
    }

    #[test]
    fn bad_files_are_refused_with_their_names() {
        let missing = Path::new("/nonexistent/kelp-cert.pem");
        let e = load(&Files {
            cert: missing,
            key: missing,
            client_ca: None,
        })
        .err()
        .unwrap();
        assert!(e.contains("/nonexistent/kelp-cert.pem"), "{e}");
    }
}
