//! Who a client is: SASL mechanisms (PLAIN, SCRAM-SHA-256/512) checked against salted
//! credentials, and the users file that holds them.

pub mod cli;
pub mod scram;
pub mod session;
pub mod users;

pub use scram::{Credential, Mechanism};
pub use users::Users;
