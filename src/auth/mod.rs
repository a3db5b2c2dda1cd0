//! Who a client is: SASL mechanisms (PLAIN, SCRAM-SHA-256/512) checked against salted
//! credentials, and the users file that holds them.

pub mod admin;
pub mod cli;
pub mod scram;
pub mod session;
pub mod users;

pub use scram::{Credential, Mechanism};
pub use users::Users;

/// A connection's security state on a TLS or SASL listener. It travels with the socket when the
/// connection moves to another shard, so a move neither repeats a handshake nor a login.
#[derive(Default)]
pub struct Security {
    /// On a TLS listener: the session between the socket and the plaintext buffers.
    pub tls: Option<Box<crate::tls::Session>>,
    /// On a SASL listener: the login state (see [`session`]).
    pub sasl: Option<session::Gate>,
    /// When the connection is closed unless its handshake and login are done by then.
    pub deadline: Option<std::time::Instant>,
}

impl Security {
    /// Who the connection is: its SASL login, else the subject of its verified client
    /// certificate (mutual TLS), as Kafka names principals.
    pub fn principal(&self) -> Option<String> {
        match &self.sasl {
            Some(gate) => gate.principal().map(str::to_string),
            None => self.tls.as_ref().and_then(|t| t.peer_subject()),
        }
    }
}
