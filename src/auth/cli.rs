//! `kelp user add` and `kelp user delete`: the users file from the command line. The password
//! comes on standard input, never as an argument (arguments show in `ps` and shell history).

use super::scram::Credential;
use super::users::{valid_user, Users};
use crate::config::{limits, UserCommand};
use std::io::Read;

/// Runs a `kelp user` command; what it did, for the operator.
pub fn run(cmd: UserCommand, stdin: impl Read) -> Result<String, String> {
    match cmd {
        UserCommand::Add {
            users_file,
            mechanism,
            iterations,
            name,
        } => {
            valid_user(&name)?;
            let password = read_password(stdin)?;
            let mut users = Users::load(&users_file, true)?;
            for &m in &mechanism {
                let c = Credential::generate(m, &password, iterations)
                    .map_err(|e| format!("no random salt from the OS: {e}"))?;
                users.set(&name, m, c);
            }
            users
                .save(&users_file)
                .map_err(|e| format!("cannot write {}: {e}", users_file.display()))?;
            let names: Vec<_> = mechanism.iter().map(|m| m.name()).collect();
            Ok(format!(
                "user {name:?}: {} credential set in {}",
                names.join(", "),
                users_file.display()
            ))
        }
        UserCommand::Delete {
            users_file,
            mechanism,
            name,
        } => {
            let mut users = Users::load(&users_file, false)?;
            let gone = users.remove(&name, mechanism);
            if gone == 0 {
                return Err(format!(
                    "user {name:?} has no such credential in {}",
                    users_file.display()
                ));
            }
            users
                .save(&users_file)
                .map_err(|e| format!("cannot write {}: {e}", users_file.display()))?;
            Ok(format!("user {name:?}: {gone} credential(s) deleted"))
        }
    }
}

/// The first line of standard input, without its line end.
fn read_password(stdin: impl Read) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    stdin
        .take(limits::SASL_PASSWORD_BYTES_MAX as u64 + 2)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err("no password on standard input".into());
    }
    if line.len() > limits::SASL_PASSWORD_BYTES_MAX {
        return Err(format!(
            "the password is longer than {} bytes",
            limits::SASL_PASSWORD_BYTES_MAX
        ));
    }
    Ok(line.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::{Mechanism, ITERATIONS_MIN};

    #[test]
    fn add_then_delete_through_the_file_and_no_password_in_it() {
        let dir = std::env::temp_dir().join(format!("kelp-user-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users");
        let add = |name: &str, mechs: Vec<Mechanism>, pw: &[u8]| {
            run(
                UserCommand::Add {
                    users_file: file.clone(),
                    mechanism: mechs,
                    iterations: ITERATIONS_MIN,
                    name: name.into(),
                },
                pw,
            )
        };
        add(
            "alice",
            vec![Mechanism::Plain, Mechanism::ScramSha512],
            b"hunter2-secret\n",
        )
        .unwrap();
        add(
            "bob",
            vec![Mechanism::ScramSha256],
            b"other-secret\r\nignored",
        )
        .unwrap();
        assert!(add("carol", vec![Mechanism::Plain], b"\n").is_err());
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("hunter2") && !text.contains("other-secret"));
        let users = Users::load(&file, false).unwrap();
        assert_eq!(users.len(), 3);
        let plain = users.get("alice", Mechanism::Plain).unwrap();
        assert!(plain.matches_password(Mechanism::Plain, b"hunter2-secret"));
        let del = |mech| {
            run(
                UserCommand::Delete {
                    users_file: file.clone(),
                    mechanism: mech,
                    name: "alice".into(),
                },
                &b""[..],
            )
        };
        del(Some(Mechanism::Plain)).unwrap();
        del(None).unwrap();
        assert!(del(None).is_err(), "nothing left to delete");
        assert_eq!(Users::load(&file, false).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
