//! The server side of SCRAM-SHA-256/512 (RFC 5802, RFC 7677) as Kafka speaks it (KIP-84), and
//! the salted credentials every mechanism is checked against.
//!
//! A credential is what RFC 5802 lets a server keep instead of the password: the salt, the
//! iteration count, `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`. A SCRAM exchange proves the client knows
//! the password without sending it; PLAIN sends the password, which is salted and hashed the
//! same way and compared with the stored key.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// The SASL mechanisms kelp serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
    ];

    /// The name clients ask for in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn parse(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The hash behind the credential (PLAIN's salted hash uses SHA-512).
    pub(crate) fn hash(self) -> Hash {
        match self {
            Mechanism::ScramSha256 => Hash::Sha256,
            Mechanism::Plain | Mechanism::ScramSha512 => Hash::Sha512,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length: new_from_slice cannot fail.
        match self {
            Hash::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Hash::Sha512 => {
                let mut m = Hmac::<Sha512>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    pub(crate) fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            Hash::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// Fewest iterations a credential may have: Kafka's minimum for SCRAM (KIP-84).
pub const ITERATIONS_MIN: u32 = 4096;
/// Most iterations a credential may have: Kafka's maximum; also bounds the work a PLAIN login
/// costs the shard.
pub const ITERATIONS_MAX: u32 = 16_384;
/// Random bytes in a new credential's salt, and in the server's half of a SCRAM nonce.
const SALT_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

/// A salted credential (never the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Credential {
    /// The credential of `password` with this salt and iteration count.
    pub fn derive(mech: Mechanism, password: &[u8], salt: Vec<u8>, iterations: u32) -> Credential {
        let salted = mech.hash().salted_password(password, &salt, iterations);
        Credential::from_salted(mech, &salted, salt, iterations)
    }

    /// The credential a client computed itself (AlterUserScramCredentials sends the salted
    /// password, never the password).
    pub fn from_salted(mech: Mechanism, salted: &[u8], salt: Vec<u8>, iterations: u32) -> Self {
        let h = mech.hash();
        let client_key = h.hmac(salted, b"Client Key");
        Credential {
            stored_key: h.digest(&client_key),
            server_key: h.hmac(salted, b"Server Key"),
            salt,
            iterations,
        }
    }

    /// A credential of `password` with a fresh random salt.
    pub fn generate(
        mech: Mechanism,
        password: &[u8],
        iterations: u32,
    ) -> Result<Credential, getrandom::Error> {
        Ok(Credential::derive(
            mech,
            password,
            random(SALT_BYTES)?,
            iterations,
        ))
    }

    /// PLAIN: whether `password` is the one this credential was made from (constant time in
    /// the comparison; the hashing costs the same for a right and a wrong password).
    pub fn matches_password(&self, mech: Mechanism, password: &[u8]) -> bool {
        let again = Credential::derive(mech, password, self.salt.clone(), self.iterations);
        bool::from(again.stored_key.ct_eq(&self.stored_key))
    }
}

fn random(n: usize) -> Result<Vec<u8>, getrandom::Error> {
    let mut v = vec![0u8; n];
    getrandom::getrandom(&mut v)?;
    Ok(v)
}

/// Why an exchange failed. `Malformed` says what the client got wrong (it is a protocol error,
/// not a guess at a password); `Failed` is a wrong password or an unknown user, which the
/// client cannot tell apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Malformed(&'static str),
    Failed,
    /// The OS gave no random bytes for the nonce.
    NoRandomness,
}

/// What one step of an exchange produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this to the client and wait for its next message.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send `reply` (the server's signature) to the client.
    Done { user: String, reply: Vec<u8> },
}

/// The server side of one SCRAM exchange.
pub struct ScramServer {
    mech: Mechanism,
    state: State,
    /// The server's half of the nonce; random unless a test fixes it.
    nonce: Option<String>,
}

enum State {
    AwaitingFirst,
    AwaitingFinal {
        user: String,
        gs2_header: String,
        nonce: String,
        /// client-first-message-bare "," server-first-message
        auth_prefix: String,
        credential: Credential,
    },
    Finished,
}

impl ScramServer {
    pub fn new(mech: Mechanism) -> ScramServer {
        debug_assert!(mech != Mechanism::Plain);
        ScramServer {
            mech,
            state: State::AwaitingFirst,
            nonce: None,
        }
    }

    #[cfg(test)]
    fn with_nonce(mech: Mechanism, nonce: &str) -> ScramServer {
        ScramServer {
            nonce: Some(nonce.to_string()),
            ..ScramServer::new(mech)
        }
    }

    /// Takes the client's next message. `lookup` gives a user's credential for this mechanism.
    /// An unknown user gets a made-up salt and fails only at the end, as a wrong password does,
    /// so that the exchange does not tell who exists.
    pub fn step(
        &mut self,
        msg: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
    ) -> Result<Step, AuthError> {
        let msg = std::str::from_utf8(msg).map_err(|_| AuthError::Malformed("not UTF-8"))?;
        match std::mem::replace(&mut self.state, State::Finished) {
            State::AwaitingFirst => self.client_first(msg, lookup),
            State::AwaitingFinal {
                user,
                gs2_header,
                nonce,
                auth_prefix,
                credential,
            } => {
                let h = self.mech.hash();
                let fin = parse_client_final(msg)?;
                if fin.channel_binding != B64.encode(gs2_header.as_bytes()) {
                    return Err(AuthError::Malformed(
                        "channel binding differs from the gs2 header",
                    ));
                }
                // Kafka accepts a final nonce that ends with the server's (librdkafka sends its
                // own nonce again in front of it), so kelp does too: the server's random half
                // is in it either way.
                if !fin.nonce.ends_with(&nonce) {
                    return Err(AuthError::Malformed("nonce differs from the server's"));
                }
                let auth_message = format!("{auth_prefix},{}", fin.without_proof);
                let signature = h.hmac(&credential.stored_key, auth_message.as_bytes());
                if fin.proof.len() != signature.len() {
                    return Err(AuthError::Failed);
                }
                let client_key: Vec<u8> = fin
                    .proof
                    .iter()
                    .zip(&signature)
                    .map(|(a, b)| a ^ b)
                    .collect();
                if !bool::from(h.digest(&client_key).ct_eq(&credential.stored_key)) {
                    return Err(AuthError::Failed);
                }
                let server_signature = h.hmac(&credential.server_key, auth_message.as_bytes());
                Ok(Step::Done {
                    user,
                    reply: format!("v={}", B64.encode(server_signature)).into_bytes(),
                })
            }
            State::Finished => Err(AuthError::Malformed("the exchange is over")),
        }
    }

    fn client_first(
        &mut self,
        msg: &str,
        lookup: impl FnOnce(&str) -> Option<Credential>,
    ) -> Result<Step, AuthError> {
        let first = parse_client_first(msg)?;
        let credential = match lookup(&first.user) {
            Some(c) => c,
            None => Credential {
                salt: random(SALT_BYTES).map_err(|_| AuthError::NoRandomness)?,
                iterations: ITERATIONS_MIN,
                stored_key: random(64).map_err(|_| AuthError::NoRandomness)?,
                server_key: random(64).map_err(|_| AuthError::NoRandomness)?,
            },
        };
        let server_half = match self.nonce.take() {
            Some(n) => n,
            None => B64.encode(random(NONCE_BYTES).map_err(|_| AuthError::NoRandomness)?),
        };
        let nonce = format!("{}{server_half}", first.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        self.state = State::AwaitingFinal {
            user: first.user,
            gs2_header: first.gs2_header,
            nonce,
            auth_prefix: format!("{},{server_first}", first.bare),
            credential,
        };
        Ok(Step::Continue(server_first.into_bytes()))
    }
}

struct ClientFirst {
    gs2_header: String,
    bare: String,
    user: String,
    nonce: String,
}

/// `gs2-header client-first-message-bare`: `n,[a=authzid],n=user,r=nonce[,ext...]`.
fn parse_client_first(msg: &str) -> Result<ClientFirst, AuthError> {
    let mal = AuthError::Malformed;
    let (flag, rest) = msg.split_once(',').ok_or(mal("no gs2 header"))?;
    match flag {
        "n" | "y" => {}
        _ => return Err(mal("channel binding is not supported")),
    }
    let (authzid, bare) = rest.split_once(',').ok_or(mal("no gs2 header"))?;
    let gs2_header = format!("{flag},{authzid},");
    let mut attrs = bare.split(',');
    let user = attrs
        .next()
        .and_then(|a| a.strip_prefix("n="))
        .ok_or(mal("no username"))?;
    let user = decode_saslname(user).ok_or(mal("bad username escape"))?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .filter(|n| !n.is_empty())
        .ok_or(mal("no client nonce"))?;
    for ext in attrs {
        // Kafka's only extension is for delegation tokens, which kelp does not issue; a
        // mandatory extension (m=) must not be ignored (RFC 5802).
        if ext.starts_with("m=") || ext == "tokenauth=true" {
            return Err(mal("unsupported SCRAM extension"));
        }
    }
    if !authzid.is_empty() {
        let id = authzid
            .strip_prefix("a=")
            .and_then(decode_saslname)
            .ok_or(mal("bad authzid"))?;
        if id != user {
            return Err(mal("authzid differs from the username"));
        }
    }
    Ok(ClientFirst {
        gs2_header,
        bare: bare.to_string(),
        user,
        nonce: nonce.to_string(),
    })
}

struct ClientFinal<'a> {
    channel_binding: &'a str,
    nonce: &'a str,
    without_proof: &'a str,
    proof: Vec<u8>,
}

/// `c=binding,r=nonce[,ext...],p=proof`.
fn parse_client_final(msg: &str) -> Result<ClientFinal<'_>, AuthError> {
    let mal = AuthError::Malformed;
    let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(mal("no proof"))?;
    let mut attrs = without_proof.split(',');
    let channel_binding = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or(mal("no channel binding"))?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(mal("no nonce"))?;
    let proof = B64.decode(proof).map_err(|_| mal("proof is not base64"))?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

/// RFC 5802's saslname: `=2C` is ',' and `=3D` is '='; any other '=' is malformed.
fn decode_saslname(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

/// PLAIN's one message (RFC 4616): `[authzid] NUL authcid NUL passwd`. The authzid, if given,
/// must be the user itself (Kafka's rule).
pub fn parse_plain(msg: &[u8]) -> Result<(String, Vec<u8>), AuthError> {
    let mal = AuthError::Malformed;
    let mut parts = msg.splitn(3, |&b| b == 0);
    let authzid = parts.next().ok_or(mal("no authzid field"))?;
    let user = parts.next().ok_or(mal("no username field"))?;
    let password = parts.next().ok_or(mal("no password field"))?;
    let user = std::str::from_utf8(user).map_err(|_| mal("username is not UTF-8"))?;
    if user.is_empty() || password.is_empty() {
        return Err(mal("empty username or password"));
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(mal("authzid differs from the username"));
    }
    Ok((user.to_string(), password.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange, byte for byte (user "user", password "pencil").
    #[test]
    fn rfc7677_sha256_example() {
        let cred = Credential::derive(
            Mechanism::ScramSha256,
            b"pencil",
            B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        );
        let mut s =
            ScramServer::with_nonce(Mechanism::ScramSha256, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let first = s
            .step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", |u| {
                (u == "user").then(|| cred.clone())
            })
            .unwrap();
        assert_eq!(
            first,
            Step::Continue(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_vec()
            )
        );
        let fin = s
            .step(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                |_| None,
            )
            .unwrap();
        assert_eq!(
            fin,
            Step::Done {
                user: "user".into(),
                reply: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
            }
        );
    }

    /// A client side written from RFC 5802, to drive SHA-512 and the failure paths.
    fn client_final(
        mech: Mechanism,
        password: &[u8],
        first_bare: &str,
        server_first: &str,
    ) -> String {
        let h = mech.hash();
        let attr = |k: &str| {
            server_first
                .split(',')
                .find_map(|a| a.strip_prefix(k))
                .unwrap()
                .to_string()
        };
        let salted = h.salted_password(
            password,
            &B64.decode(attr("s=")).unwrap(),
            attr("i=").parse().unwrap(),
        );
        let client_key = h.hmac(&salted, b"Client Key");
        let without_proof = format!("c=biws,r={}", attr("r="));
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let sig = h.hmac(&h.digest(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    fn exchange(
        mech: Mechanism,
        stored: &[u8],
        user: &str,
        tried: &[u8],
    ) -> Result<Step, AuthError> {
        let cred = Credential::generate(mech, stored, ITERATIONS_MIN).unwrap();
        let mut s = ScramServer::new(mech);
        let bare = format!("n={user},r=abcdefgh");
        let Step::Continue(sf) = s.step(format!("n,,{bare}").as_bytes(), |u| {
            (u == "alice").then(|| cred.clone())
        })?
        else {
            panic!("the first step finishes nothing");
        };
        let sf = String::from_utf8(sf).unwrap();
        assert!(
            sf.starts_with("r=abcdefgh"),
            "the server extends the client's nonce"
        );
        s.step(client_final(mech, tried, &bare, &sf).as_bytes(), |_| None)
    }

    #[test]
    fn sha512_and_sha256_accept_the_password_and_nothing_else() {
        for mech in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
            match exchange(mech, b"s3cret", "alice", b"s3cret") {
                Ok(Step::Done { user, reply }) => {
                    assert_eq!(user, "alice");
                    assert!(reply.starts_with(b"v="));
                }
                other => panic!("{mech:?}: {other:?}"),
            }
            assert_eq!(
                exchange(mech, b"s3cret", "alice", b"s3creT"),
                Err(AuthError::Failed)
            );
            assert_eq!(
                exchange(mech, b"s3cret", "mallory", b"s3cret"),
                Err(AuthError::Failed),
                "an unknown user fails like a wrong password, at the end"
            );
        }
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        let mut s = ScramServer::new(Mechanism::ScramSha512);
        for bad in [
            &b"p=tls-unique,,n=a,r=x"[..],
            b"n,,r=x",
            b"n,,n=a",
            b"n,,n=a=2X,r=x",
            b"n,a=bob,n=alice,r=x",
            b"n,,n=a,r=x,m=must",
            b"\xff",
            b"",
        ] {
            s.state = State::AwaitingFirst;
            assert!(
                matches!(s.step(bad, |_| None), Err(AuthError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
    }

    #[test]
    fn plain_needs_user_and_password_and_a_matching_authzid() {
        assert_eq!(
            parse_plain(b"\0alice\0pw"),
            Ok(("alice".to_string(), b"pw".to_vec()))
        );
        assert!(parse_plain(b"alice\0alice\0pw").is_ok());
        assert!(parse_plain(b"bob\0alice\0pw").is_err());
        assert!(parse_plain(b"\0alice").is_err());
        assert!(parse_plain(b"\0\0pw").is_err());
        let c = Credential::generate(Mechanism::Plain, b"pw", ITERATIONS_MIN).unwrap();
        assert!(c.matches_password(Mechanism::Plain, b"pw"));
        assert!(!c.matches_password(Mechanism::Plain, b"pW"));
    }
}
