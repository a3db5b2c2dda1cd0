//! One connection's SASL state on a SASL listener: the handshake picks a mechanism, the
//! exchange (in SaslAuthenticate requests, or raw frames after a v0 handshake) proves a user,
//! and until then the connection may send nothing but ApiVersions and the SASL requests.
//!
//! Everything here runs inline on the connection's turn (a SCRAM step is a few HMACs; PLAIN
//! hashes the password once, `ITERATIONS_MIN`..`ITERATIONS_MAX` PBKDF2 rounds, about a
//! millisecond), so the answers keep their place among the connection's responses.

use super::scram::{parse_plain, AuthError, Mechanism, ScramServer, Step};
use super::users::Users;
use crate::error::ErrorCode;
use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the connection must do with a request, given the SASL state.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Serve it.
    Serve,
    /// Close the connection: the reason, for the log.
    Close(String),
}

/// A connection's SASL state.
pub struct Gate {
    users: Arc<Users>,
    /// `--sasl-reauth-ms`: how long an authentication holds (0: for the connection's life).
    lifetime: Duration,
    state: State,
    /// Who the connection authenticated as, and until when.
    principal: Option<String>,
    expires: Option<Instant>,
    /// Failed logins on this connection, for the caller's metrics.
    pub failures: u64,
}

enum State {
    /// Waiting for SaslHandshake (first login, or a re-authentication: KIP-368).
    Handshake,
    /// A mechanism is chosen; its exchange comes in SaslAuthenticate requests (`raw`: as bare
    /// frames, after a v0 handshake).
    Exchange {
        mech: Mechanism,
        raw: bool,
        scram: Option<Box<ScramServer>>,
    },
}

impl Gate {
    pub fn new(users: Arc<Users>, lifetime: Duration) -> Gate {
        Gate {
            users,
            lifetime,
            state: State::Handshake,
            principal: None,
            expires: None,
            failures: 0,
        }
    }

    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// The next frame is a bare SASL token, not a request (after a v0 handshake).
    pub fn expects_raw_token(&self) -> bool {
        matches!(self.state, State::Exchange { raw: true, .. })
    }

    /// Whether a request of this kind may be served now.
    pub fn admit(&self, api: kafka_protocol::messages::ApiKey) -> Admit {
        use kafka_protocol::messages::ApiKey;
        match api {
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => Admit::Serve,
            _ if self.principal.is_none() => {
                Admit::Close(format!("{api:?} request before SASL authentication"))
            }
            _ if self.expires.is_some_and(|t| Instant::now() >= t) => Admit::Close(
                "SASL session expired without re-authentication (--sasl-reauth-ms)".into(),
            ),
            _ => Admit::Serve,
        }
    }

    pub fn handshake(&mut self, req: &SaslHandshakeRequest, version: i16) -> SaslHandshakeResponse {
        let mechanisms = Mechanism::ALL
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect();
        let mut resp = SaslHandshakeResponse::default();
        resp.mechanisms = mechanisms;
        if !matches!(self.state, State::Handshake) {
            resp.error_code = ErrorCode::IllegalSaslState.code();
            return resp;
        }
        match Mechanism::parse(req.mechanism.as_str()) {
            Some(mech) => {
                let scram = (mech != Mechanism::Plain).then(|| Box::new(ScramServer::new(mech)));
                self.state = State::Exchange {
                    mech,
                    raw: version == 0,
                    scram,
                };
            }
            None => resp.error_code = ErrorCode::UnsupportedSaslMechanism.code(),
        }
        resp
    }

    /// A SaslAuthenticate request: the answer, and whether the connection stays open (after a
    /// failed login it closes once the answer is sent, as Kafka's does).
    pub fn authenticate(
        &mut self,
        req: &SaslAuthenticateRequest,
    ) -> (SaslAuthenticateResponse, bool) {
        let mut resp = SaslAuthenticateResponse::default();
        match self.step(&req.auth_bytes) {
            Ok(reply) => {
                resp.auth_bytes = Bytes::from(reply);
                if self.principal.is_some() && matches!(self.state, State::Handshake) {
                    resp.session_lifetime_ms = self.lifetime.as_millis() as i64;
                }
                (resp, true)
            }
            Err((code, message)) => {
                resp.error_code = code.code();
                resp.error_message = Some(StrBytes::from_string(message));
                (resp, false)
            }
        }
    }

    /// A bare token after a v0 handshake: the reply token, or `None` to close (a v0 client
    /// has no way to receive an error).
    pub fn raw_token(&mut self, token: &[u8]) -> Option<Vec<u8>> {
        self.step(token).ok()
    }

    /// One step of the chosen mechanism's exchange.
    fn step(&mut self, token: &[u8]) -> Result<Vec<u8>, (ErrorCode, String)> {
        let State::Exchange { mech, scram, .. } = &mut self.state else {
            return Err((
                ErrorCode::IllegalSaslState,
                "SaslAuthenticate before SaslHandshake".into(),
            ));
        };
        let mech = *mech;
        let users = &self.users;
        let outcome = match scram {
            None => parse_plain(token).and_then(|(user, password)| {
                match users.get(&user, Mechanism::Plain) {
                    Some(c) if c.matches_password(Mechanism::Plain, &password) => Ok(Step::Done {
                        user,
                        reply: Vec::new(),
                    }),
                    _ => Err(AuthError::Failed),
                }
            }),
            Some(s) => s.step(token, |user| users.get(user, mech).cloned()),
        };
        match outcome {
            Ok(Step::Continue(reply)) => Ok(reply),
            Ok(Step::Done { user, reply }) => {
                if self.principal.as_ref().is_some_and(|p| *p != user) {
                    // KIP-368: a re-authentication may not change who the connection is.
                    self.failures += 1;
                    return Err((
                        ErrorCode::SaslAuthenticationFailed,
                        "re-authentication as another user".into(),
                    ));
                }
                log::debug!("SASL {}: authenticated as {user:?}", mech.name());
                self.principal = Some(user);
                self.expires = (!self.lifetime.is_zero()).then(|| Instant::now() + self.lifetime);
                self.state = State::Handshake;
                Ok(reply)
            }
            Err(e) => {
                self.failures += 1;
                // The connection closes after a failed login; a new exchange starts over.
                self.state = State::Handshake;
                let why = match e {
                    AuthError::Malformed(why) => why,
                    AuthError::Failed => "invalid credentials",
                    AuthError::NoRandomness => "no randomness for the nonce",
                };
                // The log names the mechanism and the reason, never the token (it may hold the
                // password).
                log::info!("SASL {} authentication failed: {why}", mech.name());
                Err((
                    ErrorCode::SaslAuthenticationFailed,
                    format!(
                        "Authentication failed during authentication due to {why} with SASL \
                         mechanism {}",
                        mech.name()
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credential;
    use kafka_protocol::messages::ApiKey;

    fn gate(lifetime_ms: u64) -> Gate {
        let mut users = Users::default();
        let c = Credential::generate(Mechanism::Plain, b"pw", 4096).unwrap();
        users.set("alice", Mechanism::Plain, c);
        Gate::new(Arc::new(users), Duration::from_millis(lifetime_ms))
    }

    fn plain(g: &mut Gate, token: &[u8]) -> SaslAuthenticateResponse {
        let mut h = SaslHandshakeRequest::default();
        h.mechanism = StrBytes::from_static_str("PLAIN");
        assert_eq!(g.handshake(&h, 1).error_code, 0);
        let mut a = SaslAuthenticateRequest::default();
        a.auth_bytes = Bytes::copy_from_slice(token);
        g.authenticate(&a).0
    }

    #[test]
    fn nothing_but_sasl_and_api_versions_before_login() {
        let mut g = gate(0);
        assert!(matches!(g.admit(ApiKey::Produce), Admit::Close(_)));
        assert_eq!(g.admit(ApiKey::ApiVersions), Admit::Serve);
        let r = plain(&mut g, b"\0alice\0wrong");
        assert_eq!(r.error_code, ErrorCode::SaslAuthenticationFailed.code());
        assert_eq!(g.failures, 1);
        assert!(matches!(g.admit(ApiKey::Produce), Admit::Close(_)));
        let r = plain(&mut g, b"\0alice\0pw");
        assert_eq!(r.error_code, 0);
        assert_eq!(r.session_lifetime_ms, 0);
        assert_eq!(g.principal(), Some("alice"));
        assert_eq!(g.admit(ApiKey::Produce), Admit::Serve);
    }

    #[test]
    fn unknown_mechanisms_and_out_of_order_requests_are_refused() {
        let mut g = gate(0);
        let mut h = SaslHandshakeRequest::default();
        h.mechanism = StrBytes::from_static_str("GSSAPI");
        let r = g.handshake(&h, 1);
        assert_eq!(r.error_code, ErrorCode::UnsupportedSaslMechanism.code());
        assert_eq!(r.mechanisms.len(), 3);
        let (r, ok) = g.authenticate(&SaslAuthenticateRequest::default());
        assert!(!ok);
        assert_eq!(r.error_code, ErrorCode::IllegalSaslState.code());
    }

    #[test]
    fn a_session_expires_and_reauthentication_keeps_the_user() {
        let mut g = gate(1);
        assert_eq!(plain(&mut g, b"\0alice\0pw").session_lifetime_ms, 1);
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(g.admit(ApiKey::Fetch), Admit::Close(_)));
        assert_eq!(plain(&mut g, b"\0alice\0pw").error_code, 0);
        assert_eq!(g.admit(ApiKey::Fetch), Admit::Serve);
    }
}
