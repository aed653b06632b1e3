//! Where tokens are kept: `tokens.db` in the data directory (made by `testgrid-coordinator
//! token create`, only hashes), and an optional `--tokens-file` of `ROLE NAME TOKEN` lines (a
//! mounted Secret). Both are read whole: they hold tens of tokens, not millions.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Role, Token, WorkerLimits};

/// The tokens database in the data directory.
pub const FILE: &str = "tokens.db";

/// The longest token name (it is each session's owner, shown and stored everywhere).
pub const MAX_NAME_BYTES: usize = 128;

/// The largest `--tokens-file` read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The shortest token a `--tokens-file` may give (shorter ones can be guessed).
const MIN_FILE_TOKEN_BYTES: usize = 24;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY NOT NULL,
    role TEXT NOT NULL,
    hash BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    labels TEXT NOT NULL DEFAULT '',
    max_slots INTEGER
);
";

/// Why tokens could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot open the tokens database {}: {source}", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("the tokens database {} cannot be used: {source}", path.display())]
    Database { path: PathBuf, source: rusqlite::Error },
    #[error("a token named `{0}` exists already: revoke it first, or pick another name")]
    Exists(String),
    #[error("no token is named `{0}`; `testgrid-coordinator token list` shows them")]
    Unknown(String),
    #[error(
        "bad token name: {0}; use up to 128 letters, digits and `.`, `_`, `-`, `@` (e.g. alice, ci-main, worker-pool-1)"
    )]
    BadName(String),
    #[error("cannot read --tokens-file {}: {source}", path.display())]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("--tokens-file {}, line {line}: {problem}", path.display())]
    BadLine { path: PathBuf, line: usize, problem: String },
}

/// A token name that can be shown and stored anywhere: short, printable, no spaces.
pub fn check_name(name: &str) -> Result<(), TokenError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(TokenError::BadName(format!("it has {} bytes", name.len())));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))) {
        return Err(TokenError::BadName(format!("it contains {c:?}")));
    }
    Ok(())
}

/// The tokens database of a data directory.
pub struct TokenDb {
    path: PathBuf,
    conn: Connection,
}

impl TokenDb {
    /// Open (creating if need be) `tokens.db` in `dir`.
    pub fn open(dir: &Path) -> Result<TokenDb, TokenError> {
        let path = dir.join(FILE);
        let conn = Connection::open(&path).map_err(|source| TokenError::Open { path: path.clone(), source })?;
        let db = TokenDb { path, conn };
        db.conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .and_then(|()| db.conn.execute_batch(SCHEMA))
            .map_err(|e| db.failed(e))?;
        Ok(db)
    }

    /// Open `tokens.db` in `dir` if it exists (a coordinator does not create it).
    pub fn open_existing(dir: &Path) -> Result<Option<TokenDb>, TokenError> {
        if dir.join(FILE).exists() { TokenDb::open(dir).map(Some) } else { Ok(None) }
    }

    fn failed(&self, source: rusqlite::Error) -> TokenError {
        TokenError::Database { path: self.path.clone(), source }
    }

    /// Keep a new token; the secret itself is not kept.
    pub fn create(&self, token: &Token) -> Result<(), TokenError> {
        check_name(&token.name)?;
        let exists = self
            .conn
            .query_row("SELECT 1 FROM tokens WHERE name = ?1", params![token.name], |_| Ok(()))
            .optional()
            .map_err(|e| self.failed(e))?;
        if exists.is_some() {
            return Err(TokenError::Exists(token.name.clone()));
        }
        self.conn
            .execute(
                "INSERT INTO tokens (name, role, hash, created_ms, expires_ms, labels, max_slots) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    token.name,
                    token.role.as_str(),
                    token.hash.as_bytes().as_slice(),
                    token.created_ms as i64,
                    token.expires_ms.map(|ms| ms as i64),
                    token.limits.labels_text(),
                    token.limits.max_slots
                ],
            )
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// Delete the token `name`.
    pub fn revoke(&self, name: &str) -> Result<(), TokenError> {
        match self.conn.execute("DELETE FROM tokens WHERE name = ?1", params![name]).map_err(|e| self.failed(e))? {
            0 => Err(TokenError::Unknown(name.to_string())),
            _ => Ok(()),
        }
    }

    /// Every token kept, by name.
    pub fn all(&self) -> Result<Vec<Token>, TokenError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, role, hash, created_ms, expires_ms, labels, max_slots FROM tokens ORDER BY name",
            )
            .map_err(|e| self.failed(e))?;
        let rows = stmt
            .query_map([], |row| {
                let role: String = row.get(1)?;
                let hash: Vec<u8> = row.get(2)?;
                let expires: Option<i64> = row.get(4)?;
                let limits: (String, Option<u32>) = (row.get(5)?, row.get(6)?);
                Ok((row.get::<_, String>(0)?, role, hash, row.get::<_, i64>(3)?, expires, limits))
            })
            .map_err(|e| self.failed(e))?;
        let mut tokens = Vec::new();
        for row in rows {
            let (name, role, hash, created, expires, (labels, max_slots)) = row.map_err(|e| self.failed(e))?;
            // A row this version cannot read (a role it does not know) grants nothing.
            let (Ok(role), Ok(hash), Ok(labels)) =
                (role.parse::<Role>(), <[u8; 32]>::try_from(hash.as_slice()), WorkerLimits::parse_labels(&labels))
            else {
                tracing::warn!(token = %name, "ignoring a token this coordinator cannot read");
                continue;
            };
            tokens.push(Token {
                name,
                role,
                hash: blake3::Hash::from_bytes(hash),
                created_ms: created.max(0) as u64,
                expires_ms: expires.map(|ms| ms.max(0) as u64),
                limits: WorkerLimits { labels, max_slots },
            });
        }
        Ok(tokens)
    }
}

/// The tokens of a `--tokens-file`: `ROLE NAME TOKEN` per line; blank lines and lines starting
/// with `#` are skipped. A line that cannot be read fails the whole file (a typo must not lock
/// out a whole team silently, nor grant something unintended).
pub fn read_file(path: &Path) -> Result<Vec<Token>, TokenError> {
    use std::io::Read;
    let read_error = |source| TokenError::ReadFile { path: path.to_path_buf(), source };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read_error)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(TokenError::BadLine {
            path: path.to_path_buf(),
            line: 0,
            problem: "the file is over 1 MiB".into(),
        });
    }
    let mut tokens: Vec<Token> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |problem: String| TokenError::BadLine { path: path.to_path_buf(), line: i + 1, problem };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [role, name, secret, ref options @ ..] = fields[..] else {
            return Err(bad(format!(
                "expected `ROLE NAME TOKEN [labels=K=V,...] [slots=N]`, found {} fields",
                fields.len()
            )));
        };
        let mut limits = WorkerLimits::default();
        for option in options {
            if let Some(labels) = option.strip_prefix("labels=") {
                limits.labels = WorkerLimits::parse_labels(labels).map_err(|e| bad(format!("labels: {e}")))?;
            } else if let Some(slots) = option.strip_prefix("slots=") {
                limits.max_slots = Some(slots.parse().map_err(|_| bad("slots= takes a number".to_string()))?);
            } else {
                return Err(bad("after the token only `labels=K=V,...` and `slots=N` may follow".to_string()));
            }
        }
        let role = role.parse::<Role>().map_err(bad)?;
        check_name(name).map_err(|e| bad(e.to_string()))?;
        if secret.len() < MIN_FILE_TOKEN_BYTES {
            return Err(bad(format!(
                "the token of `{name}` is too short ({} bytes, at least {MIN_FILE_TOKEN_BYTES}); `openssl rand -base64 32` makes one",
                secret.len()
            )));
        }
        if tokens.iter().any(|t| t.name == name) {
            return Err(bad(format!("`{name}` is named twice")));
        }
        tokens.push(Token {
            name: name.to_string(),
            role,
            hash: super::hash(secret),
            created_ms: 0,
            expires_ms: None,
            limits,
        });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_kept_as_a_hash_listed_and_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = TokenDb::open(dir.path()).expect("open");
        let (token, secret) = Token::generate("alice", Role::User, 10, Some(1_000));
        db.create(&token).expect("create");
        assert!(matches!(db.create(&token), Err(TokenError::Exists(_))));
        let raw = std::fs::read(dir.path().join(FILE)).expect("read db");
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret is not kept");
        let all = db.all().expect("list");
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].role, all[0].expires_ms, all[0].hash),
            (Role::User, Some(1_000), super::super::hash(&secret))
        );
        db.revoke("alice").expect("revoke");
        assert!(matches!(db.revoke("alice"), Err(TokenError::Unknown(_))));
        assert!(db.all().expect("list").is_empty());
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(check_name("ci-main_1.x@team").is_ok());
        for bad in ["", "has space", "esc\u{1b}[31m", &"a".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_tokens_file_is_read_strictly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens");
        let good = "0123456789abcdef0123456789";
        std::fs::write(&file, format!("# team\n\nuser alice {good}\nworker pool-1 {good}x\n")).expect("write");
        let tokens = read_file(&file).expect("read");
        assert_eq!(
            tokens.iter().map(|t| (t.name.as_str(), t.role)).collect::<Vec<_>>(),
            [("alice", Role::User), ("pool-1", Role::Worker)]
        );
        for (text, problem) in [
            (format!("root alice {good}"), "unknown role"),
            (format!("user alice {good} extra"), "may follow"),
            ("user alice short".to_string(), "too short"),
            (format!("user alice {good}\nadmin alice {good}1"), "twice"),
        ] {
            std::fs::write(&file, text).expect("write");
            let e = read_file(&file).expect_err("refused").to_string();
            assert!(e.contains(problem) && !e.contains(good), "{e}");
        }
    }
}
