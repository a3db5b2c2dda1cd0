//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): what
//! `kafka-configs.sh --describe/--alter --entity-type users` and the admin clients' SCRAM calls
//! send. Only a principal named in `--super-users`, logged in on a SASL listener, may call them
//! (kelp has no ACLs; without an authorizer Kafka would let anyone, which for credentials is
//! the wrong default). The answers never carry a salt or a key: Describe tells mechanisms and
//! iteration counts; Alter takes the client's salted password (the password never travels).
//!
//! An alteration rewrites the users file (atomically, as `kelp user` does) under one
//! process-wide lock, off the shard (the caller runs it on a blocking thread), and hands the
//! new users to every shard as SIGHUP does.

use super::scram::{Credential, Mechanism, ITERATIONS_MAX, ITERATIONS_MIN};
use super::users::{valid_user, Users};
use crate::config::limits;
use crate::error::ErrorCode;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Whether `principal` may describe and alter credentials.
pub fn authorized(principal: Option<&str>, super_users: &[String]) -> bool {
    principal.is_some_and(|p| super_users.iter().any(|s| s == p))
}

/// The answer to a caller who may not describe credentials: the error in every named user's
/// result, or, when no user is named (all of them), at the top. Only then at the top:
/// librdkafka 2.x corrupts its heap on any answer with an error at the top (confluent-kafka
/// 2.16's admin client crashed on it here, with users named or not), and the users' results
/// carry the error to every client.
pub fn refuse_describe(
    req: &DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let why = "only --super-users may describe SCRAM credentials";
    let mut resp = DescribeUserScramCredentialsResponse::default();
    let named = req.users.as_ref().is_some_and(|u| !u.is_empty());
    if !named {
        resp.error_code = ErrorCode::ClusterAuthorizationFailed.code();
        resp.error_message = text(why);
    }
    for user in req.users.iter().flatten() {
        let mut r = DescribeUserScramCredentialsResult::default();
        r.user = user.name.clone();
        r.error_code = ErrorCode::ClusterAuthorizationFailed.code();
        r.error_message = text(why);
        resp.results.push(r);
    }
    resp
}

/// The answer to a caller who may not alter credentials (or when they cannot be written):
/// every user named gets `code`.
pub fn refuse_alter(
    req: &AlterUserScramCredentialsRequest,
    code: ErrorCode,
    why: &str,
) -> Vec<AlterUserScramCredentialsResult> {
    let names: std::collections::BTreeSet<String> =
        (req.deletions.iter().map(|d| d.name.to_string()))
            .chain(req.upsertions.iter().map(|u| u.name.to_string()))
            .collect();
    names
        .into_iter()
        .map(|user| {
            let mut r = AlterUserScramCredentialsResult::default();
            r.user = StrBytes::from_string(user);
            r.error_code = code.code();
            r.error_message = text(why);
            r
        })
        .collect()
}

/// Kafka's ScramMechanism numbers (1: SCRAM-SHA-256, 2: SCRAM-SHA-512).
fn mechanism(n: i8) -> Option<Mechanism> {
    match n {
        1 => Some(Mechanism::ScramSha256),
        2 => Some(Mechanism::ScramSha512),
        _ => None,
    }
}

/// The size of the mechanism's digest, which a salted password is.
fn digest_bytes(m: Mechanism) -> usize {
    match m {
        Mechanism::ScramSha256 => 32,
        Mechanism::ScramSha512 | Mechanism::Plain => 64,
    }
}

fn number(m: Mechanism) -> Option<i8> {
    match m {
        Mechanism::ScramSha256 => Some(1),
        Mechanism::ScramSha512 => Some(2),
        Mechanism::Plain => None,
    }
}

fn text(s: &str) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.to_string()))
}

/// The SCRAM credentials of the named users (every user's when none are named).
pub fn describe(
    users: &Users,
    req: &DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let mut infos: BTreeMap<&str, Vec<CredentialInfo>> = BTreeMap::new();
    for (user, mech, cred) in users.iter() {
        if let Some(n) = number(mech) {
            let mut info = CredentialInfo::default();
            info.mechanism = n;
            info.iterations = cred.iterations as i32;
            infos.entry(user).or_default().push(info);
        }
    }
    let named: Vec<String> = match &req.users {
        Some(list) if !list.is_empty() => list.iter().map(|u| u.name.to_string()).collect(),
        _ => infos.keys().map(|u| u.to_string()).collect(),
    };
    let mut seen = HashSet::new();
    let mut resp = DescribeUserScramCredentialsResponse::default();
    for name in &named {
        let mut r = DescribeUserScramCredentialsResult::default();
        r.user = StrBytes::from_string(name.clone());
        if !seen.insert(name) {
            r.error_code = ErrorCode::DuplicateResource.code();
            r.error_message = text("the user is named twice");
        } else if let Some(i) = infos.get(name.as_str()) {
            r.credential_infos = i.clone();
        } else {
            r.error_code = ErrorCode::ResourceNotFound.code();
            r.error_message = text("the user has no SCRAM credential");
        }
        resp.results.push(r);
    }
    resp
}

/// One user's changes in an Alter request.
#[derive(Default)]
struct Changes {
    delete: Vec<i8>,
    upsert: Vec<(i8, i32, Vec<u8>, Vec<u8>)>,
}

/// Applies the request to `users`, each user's changes all or none; one result per user.
/// Whether anything changed is `results` holding a success.
pub fn alter(
    users: &mut Users,
    req: &AlterUserScramCredentialsRequest,
) -> Vec<AlterUserScramCredentialsResult> {
    let mut by_user: BTreeMap<String, Changes> = BTreeMap::new();
    for d in &req.deletions {
        by_user
            .entry(d.name.to_string())
            .or_default()
            .delete
            .push(d.mechanism);
    }
    for u in &req.upsertions {
        let c = (
            u.mechanism,
            u.iterations,
            u.salt.to_vec(),
            u.salted_password.to_vec(),
        );
        by_user
            .entry(u.name.to_string())
            .or_default()
            .upsert
            .push(c);
    }
    by_user
        .into_iter()
        .map(|(user, changes)| {
            let mut r = AlterUserScramCredentialsResult::default();
            r.user = StrBytes::from_string(user.clone());
            if let Err((code, why)) = apply(users, &user, &changes) {
                r.error_code = code.code();
                r.error_message = text(&why);
            }
            r
        })
        .collect()
}

/// Checks every change of one user, then makes them all.
fn apply(users: &mut Users, user: &str, c: &Changes) -> Result<(), (ErrorCode, String)> {
    let bad = |code, why: &str| Err((code, why.to_string()));
    if let Err(e) = valid_user(user) {
        return bad(ErrorCode::UnacceptableCredential, &e);
    }
    let mut touched = HashSet::new();
    let all = c.delete.iter().chain(c.upsert.iter().map(|u| &u.0));
    for &n in all {
        let Some(mech) = mechanism(n) else {
            return bad(
                ErrorCode::UnsupportedSaslMechanism,
                "unknown SCRAM mechanism",
            );
        };
        if !touched.insert(mech) {
            return bad(
                ErrorCode::DuplicateResource,
                "a credential is altered twice in one request",
            );
        }
    }
    for &n in &c.delete {
        if users.get(user, mechanism(n).expect("checked")).is_none() {
            return bad(ErrorCode::ResourceNotFound, "no such credential to delete");
        }
    }
    for (n, iterations, salt, salted) in &c.upsert {
        let range = ITERATIONS_MIN as i32..=ITERATIONS_MAX as i32;
        if !range.contains(iterations) {
            let why = format!("iterations must be {ITERATIONS_MIN} to {ITERATIONS_MAX}");
            return bad(ErrorCode::UnacceptableCredential, &why);
        }
        // The salt is stored in the users file: bounded. The salted password is one digest.
        if salt.is_empty() || salt.len() > limits::SCRAM_SALT_BYTES_MAX {
            let why = format!("a salt has 1 to {} bytes", limits::SCRAM_SALT_BYTES_MAX);
            return bad(ErrorCode::UnacceptableCredential, &why);
        }
        if salted.len() != digest_bytes(mechanism(*n).expect("checked")) {
            return bad(
                ErrorCode::UnacceptableCredential,
                "salted password of the wrong size",
            );
        }
    }
    for &n in &c.delete {
        users.remove(user, mechanism(n));
    }
    for (n, iterations, salt, salted) in &c.upsert {
        let mech = mechanism(*n).expect("checked");
        let cred = Credential::from_salted(mech, salted, salt.clone(), *iterations as u32);
        users.set(user, mech, cred);
    }
    Ok(())
}

/// [`alter`] on the users file at `path`: read, changed, written back atomically and handed to
/// `publish` when anything changed, all under [`super::users::exclusive`] (so a SIGHUP reload
/// cannot hand out an older reading after it). Returns the results, or why the file could not
/// be read or written (then nothing changed).
pub fn alter_file(
    path: &Path,
    req: &AlterUserScramCredentialsRequest,
    publish: impl FnOnce(&Users),
) -> Result<Vec<AlterUserScramCredentialsResult>, String> {
    super::users::exclusive(|| {
        let mut users = Users::load(path, false)?;
        let results = alter(&mut users, req);
        if results.iter().any(|r| r.error_code == 0) {
            users
                .save(path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            publish(&users);
        }
        Ok(results)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };
    use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;

    fn upsert(name: &str, mech: i8, iterations: i32, password: &[u8]) -> ScramCredentialUpsertion {
        let mut u = ScramCredentialUpsertion::default();
        u.name = StrBytes::from_string(name.into());
        u.mechanism = mech;
        u.iterations = iterations;
        u.salt = bytes::Bytes::from_static(b"some salt");
        let m = mechanism(mech).unwrap_or(Mechanism::ScramSha256);
        let salted = m
            .hash()
            .salted_password(password, b"some salt", iterations.max(1) as u32);
        u.salted_password = salted.into();
        u
    }

    fn delete(name: &str, mech: i8) -> ScramCredentialDeletion {
        let mut d = ScramCredentialDeletion::default();
        d.name = StrBytes::from_string(name.into());
        d.mechanism = mech;
        d
    }

    #[test]
    fn an_upserted_credential_checks_the_password_the_client_salted() {
        let mut users = Users::default();
        let mut req = AlterUserScramCredentialsRequest::default();
        req.upsertions = vec![upsert("bob", 2, 4096, b"pw")];
        let results = alter(&mut users, &req);
        assert_eq!(results[0].error_code, 0);
        let cred = users.get("bob", Mechanism::ScramSha512).unwrap();
        assert!(cred.matches_password(Mechanism::ScramSha512, b"pw"));
        assert!(!cred.matches_password(Mechanism::ScramSha512, b"other"));
    }

    #[test]
    fn a_user_with_one_bad_change_gets_none_of_them_and_others_are_unaffected() {
        let mut users = Users::default();
        let mut short_salted = upsert("gina", 1, 4096, b"pw");
        short_salted.salted_password = bytes::Bytes::from_static(b"short");
        let mut long_salt = upsert("hugo", 1, 4096, b"pw");
        long_salt.salt = vec![0; limits::SCRAM_SALT_BYTES_MAX + 1].into();
        let mut req = AlterUserScramCredentialsRequest::default();
        req.upsertions = vec![
            upsert("bob", 1, 4096, b"pw"),
            upsert("bob", 2, 100, b"pw"), // too few iterations
            upsert("carol", 1, 4096, b"pw"),
            upsert("dave", 1, 4096, b"pw"),
            upsert("dave", 1, 8192, b"pw"), // the same credential twice
            upsert("erin", 7, 4096, b"pw"), // no such mechanism
            short_salted,
            long_salt,
        ];
        req.deletions = vec![delete("frank", 1)]; // nothing to delete
        let codes: Vec<(String, i16)> = alter(&mut users, &req)
            .iter()
            .map(|r| (r.user.to_string(), r.error_code))
            .collect();
        let want = [
            ("bob", ErrorCode::UnacceptableCredential),
            ("carol", ErrorCode::None),
            ("dave", ErrorCode::DuplicateResource),
            ("erin", ErrorCode::UnsupportedSaslMechanism),
            ("frank", ErrorCode::ResourceNotFound),
            ("gina", ErrorCode::UnacceptableCredential),
            ("hugo", ErrorCode::UnacceptableCredential),
        ];
        let want: Vec<(String, i16)> = want
            .iter()
            .map(|(u, c)| (u.to_string(), c.code()))
            .collect();
        assert_eq!(codes, want);
        assert_eq!(users.len(), 1, "only carol's credential was stored");
    }

    #[test]
    fn describe_names_mechanisms_and_iterations_never_keys_and_not_plain() {
        let mut users = Users::default();
        let mut req = AlterUserScramCredentialsRequest::default();
        req.upsertions = vec![upsert("bob", 1, 4096, b"pw"), upsert("bob", 2, 8192, b"pw")];
        alter(&mut users, &req);
        users.set(
            "plain-only",
            Mechanism::Plain,
            Credential::derive(Mechanism::Plain, b"x", vec![1], 4096),
        );
        let all = describe(&users, &DescribeUserScramCredentialsRequest::default());
        assert_eq!(all.results.len(), 1, "PLAIN credentials are not SCRAM's");
        let infos: Vec<(i8, i32)> = all.results[0]
            .credential_infos
            .iter()
            .map(|i| (i.mechanism, i.iterations))
            .collect();
        assert_eq!(infos, [(1, 4096), (2, 8192)]);
        let mut named = DescribeUserScramCredentialsRequest::default();
        let name = |n: &str| {
            let mut u = UserName::default();
            u.name = StrBytes::from_string(n.into());
            u
        };
        named.users = Some(vec![name("nobody"), name("bob"), name("bob")]);
        let codes: Vec<i16> = describe(&users, &named)
            .results
            .iter()
            .map(|r| r.error_code)
            .collect();
        let want = [
            ErrorCode::ResourceNotFound,
            ErrorCode::None,
            ErrorCode::DuplicateResource,
        ];
        assert_eq!(codes, want.map(ErrorCode::code));
    }

    #[test]
    fn only_named_super_users_are_authorized() {
        let supers = ["admin".to_string()];
        assert!(authorized(Some("admin"), &supers));
        assert!(!authorized(Some("bob"), &supers));
        assert!(!authorized(None, &supers), "no login, no principal");
        assert!(!authorized(Some("admin"), &[]));
    }
}
