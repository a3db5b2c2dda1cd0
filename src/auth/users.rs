//! The users file: one salted credential per user and mechanism, never a password, replaced
//! whole and atomically (written beside, synced, renamed) so that a reader sees the old file or
//! the new one.
//!
//! Format, one credential per line (`#` starts a comment line):
//! `USER<TAB>MECHANISM<TAB>ITERATIONS<TAB>SALT<TAB>STORED_KEY<TAB>SERVER_KEY`, the last three in
//! base64. PLAIN's line holds the same salted hash (PBKDF2 with HMAC-SHA-512).

use super::scram::{Credential, Mechanism, ITERATIONS_MAX, ITERATIONS_MIN};
use crate::config::limits;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

const HEADER: &str = "# kelp users file: salted credentials (kelp user add / kelp user delete)\n";

/// Runs `f` while no one else reads and hands out or rewrites the users file through here (an
/// admin alteration, a SIGHUP reload), so that an older reading is never handed to the shards
/// after a newer one. Admin and signal traffic only, never a shard's hot path.
pub fn exclusive<R>(f: impl FnOnce() -> R) -> R {
    static FILE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = FILE.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

/// Every credential, by user and mechanism.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Users {
    creds: BTreeMap<(String, Mechanism), Credential>,
}

/// A user name kelp stores: non-empty, at most `SASL_USER_BYTES_MAX` bytes, no control
/// characters (they would break the file's lines and the logs), not starting with `#` (the
/// file's comment mark; found by the round-trip property test).
pub fn valid_user(name: &str) -> Result<(), String> {
    if name.starts_with('#') {
        return Err("a user name does not start with '#'".into());
    }
    if name.is_empty() || name.len() > limits::SASL_USER_BYTES_MAX {
        return Err(format!(
            "a user name has 1 to {} bytes",
            limits::SASL_USER_BYTES_MAX
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a user name has no control characters".into());
    }
    Ok(())
}

impl Users {
    pub fn get(&self, user: &str, mech: Mechanism) -> Option<&Credential> {
        self.creds.get(&(user.to_string(), mech))
    }

    pub fn set(&mut self, user: &str, mech: Mechanism, cred: Credential) {
        self.creds.insert((user.to_string(), mech), cred);
    }

    /// Removes the user's credential for `mech`, or all of them; how many went.
    pub fn remove(&mut self, user: &str, mech: Option<Mechanism>) -> usize {
        let before = self.creds.len();
        self.creds
            .retain(|(u, m), _| u != user || mech.is_some_and(|want| *m != want));
        before - self.creds.len()
    }

    pub fn len(&self) -> usize {
        self.creds.len()
    }

    /// Every credential, by user then mechanism.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Mechanism, &Credential)> {
        self.creds.iter().map(|((u, m), c)| (u.as_str(), *m, c))
    }

    pub fn is_empty(&self) -> bool {
        self.creds.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = String::from(HEADER);
        for ((user, mech), c) in &self.creds {
            out.push_str(&format!(
                "{user}\t{}\t{}\t{}\t{}\t{}\n",
                mech.name(),
                c.iterations,
                B64.encode(&c.salt),
                B64.encode(&c.stored_key),
                B64.encode(&c.server_key)
            ));
        }
        out
    }

    pub fn parse(text: &str) -> Result<Users, String> {
        let mut users = Users::default();
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, mech, cred) =
                parse_line(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            users.set(&user, mech, cred);
        }
        Ok(users)
    }

    /// The file at `path`; a missing file is an empty one when `missing_ok`.
    pub fn load(path: &Path, missing_ok: bool) -> Result<Users, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Users::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if missing_ok && e.kind() == io::ErrorKind::NotFound => Ok(Users::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Replaces the file at `path` atomically, readable by its owner only.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the users file needs a name")
        })?;
        let tmp = dir.join(format!(
            ".{}.tmp.{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(self.render().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            // The rename is durable once the directory is.
            std::fs::File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

fn parse_line(line: &str) -> Result<(String, Mechanism, Credential), String> {
    let f: Vec<&str> = line.split('\t').collect();
    let [user, mech, iterations, salt, stored, server] = f[..] else {
        return Err(format!("{} fields, not 6", f.len()));
    };
    valid_user(user)?;
    let mech = Mechanism::parse(mech).ok_or_else(|| format!("unknown mechanism {mech:?}"))?;
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| format!("bad iteration count {iterations:?}"))?;
    if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
        return Err(format!(
            "iterations must be {ITERATIONS_MIN}..={ITERATIONS_MAX}"
        ));
    }
    let b64 = |what: &str, s: &str| B64.decode(s).map_err(|_| format!("{what} is not base64"));
    Ok((
        user.to_string(),
        mech,
        Credential {
            salt: b64("salt", salt)?,
            iterations,
            stored_key: b64("stored key", stored)?,
            server_key: b64("server key", server)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cred(seed: u8, iterations: u32) -> Credential {
        Credential {
            salt: vec![seed; 32],
            iterations,
            stored_key: vec![seed.wrapping_add(1); 64],
            server_key: vec![seed.wrapping_add(2); 64],
        }
    }

    proptest! {
        #[test]
        fn the_file_round_trips(
            entries in proptest::collection::vec(
                ("[^#\\p{Cc}][^\\p{Cc}]{0,39}", 0usize..3, any::<u8>(), ITERATIONS_MIN..=ITERATIONS_MAX),
                0..20,
            )
        ) {
            let mut users = Users::default();
            for (user, m, seed, it) in &entries {
                users.set(user, Mechanism::ALL[*m], cred(*seed, *it));
            }
            prop_assert_eq!(Users::parse(&users.render()), Ok(users));
        }
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, why) in [
            ("a\tPLAIN\t4096\tAA==\tAA==", "5 fields"),
            ("a\tMD5\t4096\tAA==\tAA==\tAA==", "unknown mechanism"),
            ("a\tPLAIN\t10\tAA==\tAA==\tAA==", "iterations"),
            ("a\tPLAIN\t4096\t!!\tAA==\tAA==", "salt is not base64"),
            ("\tPLAIN\t4096\tAA==\tAA==\tAA==", "1 to"),
        ] {
            let e = Users::parse(&format!("# c\n{text}\n")).unwrap_err();
            assert!(
                e.starts_with("line 2: ") && e.contains(why),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn names_that_would_break_the_file_are_refused() {
        for bad in [
            "",
            "#admin",
            "a\tb",
            "a\nb",
            &"x".repeat(limits::SASL_USER_BYTES_MAX + 1),
        ] {
            assert!(valid_user(bad).is_err(), "{bad:?}");
        }
        assert!(valid_user("alice smith@example.com").is_ok());
    }

    #[test]
    fn remove_takes_one_mechanism_or_all() {
        let mut u = Users::default();
        for m in Mechanism::ALL {
            u.set("a", m, cred(1, 4096));
            u.set("b", m, cred(2, 4096));
        }
        assert_eq!(u.remove("a", Some(Mechanism::Plain)), 1);
        assert!(u.get("a", Mechanism::Plain).is_none());
        assert!(u.get("a", Mechanism::ScramSha512).is_some());
        assert_eq!(u.remove("a", None), 2);
        assert_eq!(u.len(), 3);
    }

    #[test]
    fn save_replaces_the_file_and_keeps_it_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("kelp-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        let mut u = Users::default();
        u.set("a", Mechanism::ScramSha256, cred(3, 5000));
        u.save(&path).unwrap();
        u.set("b", Mechanism::Plain, cred(4, 4096));
        u.save(&path).unwrap();
        assert_eq!(Users::load(&path, false), Ok(u));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
        assert_eq!(Users::load(&dir.join("none"), true), Ok(Users::default()));
        assert!(Users::load(&dir.join("none"), false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
