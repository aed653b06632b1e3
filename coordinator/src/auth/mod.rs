//! Who may call what: tokens with roles, checked on every call by one layer in front of every
//! service, against one table ([`needs`]).
//!
//! - A token is a long random string (`tg_` and 43 characters: 256 bits); only its BLAKE3 hash
//!   is kept, and a presented token's hash is compared with each kept one in constant time.
//! - Three roles: `worker` (attach, and the blob calls a worker makes), `user` (sessions: its
//!   own; the workers' list; blobs), `admin` (everything, every user's sessions).
//! - Tokens come from `tokens.db` in the data directory and from `--tokens-file`; both are read
//!   again every second, and a token that is gone (revoked), replaced or expired is refused from
//!   then on and ends the streams it opened ([`Identity::revoked`]).
//! - A grid with no token anywhere is **open**: every caller is an anonymous admin. The
//!   coordinator only starts open on a loopback address, or with `--insecure`. Once it has seen a
//!   token it is closed for good: revoking the last token locks everyone out, it never opens it.

mod layer;
pub mod tokens;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use layer::AuthLayer;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Worker,
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "worker" => Ok(Role::Worker),
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role `{}`: use worker, user or admin", testgrid_proto::tree::shorten(other))),
        }
    }
}

/// A token as kept: its name, role and hash, never the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub hash: blake3::Hash,
    pub created_ms: u64,
    /// When it stops being accepted (ms since the UNIX epoch); `None`: never.
    pub expires_ms: Option<u64>,
    /// What a worker presenting it may register with (nothing: anything).
    pub limits: WorkerLimits,
}

/// What a worker token lets a worker claim: labels it may carry (with these values) and how
/// many slots. Empty labels and no slot count: no restriction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerLimits {
    pub labels: std::collections::BTreeMap<String, String>,
    pub max_slots: Option<u32>,
}

impl WorkerLimits {
    /// Why a worker registering with `slots` and `labels` is refused under these limits, if it is.
    pub fn refuse(
        &self,
        token: &str,
        slots: u32,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Option<String> {
        if let Some(max) = self.max_slots
            && slots > max
        {
            return Some(format!("token `{token}` may register at most {max} slots, not {slots}"));
        }
        if self.labels.is_empty() {
            return None;
        }
        labels.iter().find(|(k, v)| self.labels.get(*k) != Some(*v)).map(|(k, v)| {
            format!(
                "token `{token}` may not carry the label `{}`; it may carry {}",
                testgrid_proto::tree::shorten(&format!("{k}={v}")),
                self.labels_text()
            )
        })
    }

    /// `k=v,k2=v2` (labels) as stored and given on the command line.
    pub fn labels_text(&self) -> String {
        self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }

    pub fn parse_labels(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
        text.split(',').map(str::trim).filter(|l| !l.is_empty()).map(testgrid_proto::parse_key_value).collect()
    }
}

/// What every token starts with, so that one pasted in the wrong place is recognisable.
const PREFIX: &str = "tg_";

/// The longest `authorization` header looked at; a longer one is refused unread.
const MAX_HEADER_BYTES: usize = 1024;

/// How often the token sources are read again (and expiry checked).
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The hash a token is kept as.
pub fn hash(token: &str) -> blake3::Hash {
    blake3::hash(token.as_bytes())
}

impl Token {
    /// A new random token named `name`: what is kept, and the token itself (shown once).
    pub fn generate(name: &str, role: Role, now_ms: u64, expires_ms: Option<u64>) -> (Token, String) {
        use base64::Engine;
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        let secret = format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        let token = Token {
            name: name.to_string(),
            role,
            hash: hash(&secret),
            created_ms: now_ms,
            expires_ms,
            limits: WorkerLimits::default(),
        };
        (token, secret)
    }

    fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|at| now_ms >= at)
    }
}

/// Who is calling: the token's name and role, and a signal that fires when the token stops
/// being valid (open streams end on it).
#[derive(Clone, Debug)]
pub struct Identity {
    /// The token's name (empty on an open grid).
    pub name: String,
    pub role: Role,
    pub revoked: CancellationToken,
    /// What a worker presenting this token may register with.
    pub limits: WorkerLimits,
}

impl Identity {
    /// Whether it may see and cancel sessions owned by `owner`.
    pub fn owns(&self, owner: &str) -> bool {
        self.role == Role::Admin || self.name == owner
    }

    /// The caller of a request, as the layer found it. A request without one did not pass the
    /// layer: refused.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Identity, Status> {
        request
            .extensions()
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no identity on this call"))
    }
}

/// Which roles may call `path` (`/package.Service/Method`); `None`: no token is needed.
pub fn needs(path: &str) -> Option<&'static [Role]> {
    const WORKERS: &[Role] = &[Role::Worker, Role::Admin];
    const USERS: &[Role] = &[Role::User, Role::Admin];
    const ANY: &[Role] = &[Role::Worker, Role::User, Role::Admin];
    const ADMINS: &[Role] = &[Role::Admin];
    let (service, _method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    match service {
        // Probes must work without a token; health says nothing about sessions.
        "grpc.health.v1.Health" => None,
        "testgrid.v1.WorkerService" => Some(WORKERS),
        "testgrid.v1.SessionService" | "testgrid.v1.AdminService" => Some(USERS),
        // Workers download workspaces and upload artifacts; users upload workspaces and
        // download artifacts. A blob is only found by its digest.
        "testgrid.v1.BlobService"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => Some(ANY),
        _ => Some(ADMINS),
    }
}

/// Where tokens come from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// The data directory, whose `tokens.db` holds the tokens `token create` made.
    pub data_dir: Option<PathBuf>,
    /// `--tokens-file`: `ROLE NAME TOKEN` lines.
    pub file: Option<PathBuf>,
}

/// The tokens in force, shared by every call's check and the reload task.
pub struct Authority {
    sources: Sources,
    /// Closed once any token was seen: then every call needs one, for good.
    closed: AtomicBool,
    live: RwLock<Live>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("sources", &self.sources).field("closed", &self.is_closed()).finish()
    }
}

#[derive(Default)]
struct Live {
    tokens: Vec<Token>,
    /// Per token (name and hash), what ends the streams it opened.
    signals: HashMap<(String, [u8; 32]), CancellationToken>,
}

impl Authority {
    /// Read every source once. Fails if one cannot be read: a coordinator must not start open
    /// because its tokens file is unreadable.
    pub fn load(sources: Sources) -> Result<Arc<Authority>, tokens::TokenError> {
        let tokens = read_sources(&sources)?;
        let authority = Authority {
            closed: AtomicBool::new(!tokens.is_empty() || sources.file.is_some()),
            sources,
            live: RwLock::new(Live::default()),
        };
        authority.replace(tokens, testgrid_proto::now_ms());
        Ok(Arc::new(authority))
    }

    /// An authority with no sources: an open grid (local mode, tests).
    pub fn open() -> Arc<Authority> {
        Arc::new(Authority { sources: Sources::default(), closed: AtomicBool::new(false), live: RwLock::default() })
    }

    /// Whether calls need a token.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Put `tokens` in force: those no longer among them (or expired) end their streams.
    fn replace(&self, tokens: Vec<Token>, now_ms: u64) {
        if !tokens.is_empty() {
            self.closed.store(true, Ordering::Relaxed);
        }
        let mut live = self.live.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut signals = std::mem::take(&mut live.signals);
        let mut kept = HashMap::new();
        // An expired token stays known (to say so when it is presented) but has no signal.
        for token in tokens.iter().filter(|t| !t.expired(now_ms)) {
            let key = (token.name.clone(), *token.hash.as_bytes());
            let signal = signals.remove(&key).unwrap_or_default();
            kept.insert(key, signal);
        }
        for (key, signal) in signals {
            tracing::info!(token = %key.0, "token no longer valid: its streams end");
            signal.cancel();
        }
        live.tokens = tokens;
        live.signals = kept;
    }

    /// Who presents `header` (the `authorization` header's value, if any) on a call of `path`.
    pub fn admit(&self, path: &str, header: Option<&[u8]>) -> Result<Identity, Status> {
        let Some(needed) = needs(path) else {
            // Open to all (health): whatever token comes with it is not looked at.
            return Ok(Identity {
                name: String::new(),
                role: Role::Worker,
                revoked: CancellationToken::new(),
                limits: WorkerLimits::default(),
            });
        };
        if !self.is_closed() {
            return Ok(Identity {
                name: String::new(),
                role: Role::Admin,
                revoked: CancellationToken::new(),
                limits: WorkerLimits::default(),
            });
        }
        let presented = match header {
            None => None,
            Some(value) if value.len() > MAX_HEADER_BYTES => {
                return Err(Status::unauthenticated("the authorization header is too long to be a testgrid token"));
            }
            Some(value) => {
                let value = std::str::from_utf8(value).unwrap_or_default().trim();
                let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).unwrap_or(value);
                Some(token.trim().to_string())
            }
        };
        let Some(presented) = presented.filter(|t| !t.is_empty()) else {
            return Err(Status::unauthenticated(
                "this grid needs a token: pass --token, or set TESTGRID_TOKEN (or TESTGRID_TOKEN_FILE); \
                 an admin makes one with `testgrid-coordinator token create`",
            ));
        };
        let presented = hash(&presented);
        let now = testgrid_proto::now_ms();
        let live = self.live.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Every kept hash is compared (blake3::Hash's equality is constant-time), so the time
        // taken says nothing about which one, if any, matched.
        let mut found: Option<&Token> = None;
        for token in &live.tokens {
            if token.hash == presented && found.is_none() {
                found = Some(token);
            }
        }
        let Some(token) = found else {
            return Err(Status::unauthenticated(
                "this token is not valid on this grid (wrong, revoked, or another grid's): \
                 check TESTGRID_TOKEN, or ask an admin for one",
            ));
        };
        if token.expired(now) {
            return Err(Status::unauthenticated(format!(
                "token `{}` has expired: ask an admin for a new one",
                token.name
            )));
        }
        if !needed.contains(&token.role) {
            let method = path.rsplit('/').next().unwrap_or(path);
            let allowed: Vec<&str> = needed.iter().map(|r| r.as_str()).collect();
            return Err(Status::permission_denied(format!(
                "token `{}` has the {} role, which may not call {}: it needs {}",
                token.name,
                token.role,
                testgrid_proto::tree::shorten(method),
                allowed.join(" or ")
            )));
        }
        let key = (token.name.clone(), *token.hash.as_bytes());
        // Known and not expired, so it has a signal; if it were missing, an already-fired one.
        let revoked = live.signals.get(&key).cloned().unwrap_or_else(|| {
            let fired = CancellationToken::new();
            fired.cancel();
            fired
        });
        Ok(Identity { name: token.name.clone(), role: token.role, revoked, limits: token.limits.clone() })
    }

    /// Read the sources again every second until `stop`: changes take effect at once, on open
    /// streams too. A source that cannot be read keeps the tokens it last gave.
    pub async fn keep_current(self: Arc<Self>, stop: CancellationToken) {
        let mut warned = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RELOAD_EVERY) => {}
            }
            let sources = self.sources.clone();
            match tokio::task::spawn_blocking(move || read_sources(&sources)).await {
                Ok(Ok(tokens)) => {
                    warned = false;
                    self.replace(tokens, testgrid_proto::now_ms());
                }
                Ok(Err(e)) if !warned => {
                    warned = true;
                    tracing::warn!(error = %e, "tokens not reloaded; the ones read last stay in force");
                }
                Ok(Err(_)) | Err(_) => {}
            }
        }
    }
}

fn read_sources(sources: &Sources) -> Result<Vec<Token>, tokens::TokenError> {
    let mut all = match &sources.data_dir {
        Some(dir) => match tokens::TokenDb::open_existing(dir)? {
            Some(db) => db.all()?,
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    if let Some(file) = &sources.file {
        all.extend(tokens::read_file(file)?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_with(tokens: &[(&str, Role, Option<u64>)]) -> (Arc<Authority>, Vec<String>) {
        let authority = Authority::open();
        let mut kept = Vec::new();
        let mut secrets = Vec::new();
        for (name, role, expires) in tokens {
            let (token, secret) = Token::generate(name, *role, 0, *expires);
            kept.push(token);
            secrets.push(format!("Bearer {secret}"));
        }
        authority.replace(kept, 1);
        (authority, secrets)
    }

    #[test]
    fn an_open_grid_admits_anyone_as_admin_and_the_first_token_closes_it_for_good() {
        let (authority, secrets) = closed_with(&[]);
        assert_eq!(authority.admit("/testgrid.v1.SessionService/Submit", None).map(|i| i.role).ok(), Some(Role::Admin));
        let (token, _) = Token::generate("a", Role::User, 0, None);
        authority.replace(vec![token], 1);
        assert!(authority.admit("/testgrid.v1.SessionService/Submit", None).is_err());
        authority.replace(Vec::new(), 1);
        assert!(authority.admit("/testgrid.v1.SessionService/Submit", None).is_err(), "never open again");
        assert!(secrets.is_empty());
    }

    #[test]
    fn each_role_may_call_what_the_table_says() {
        let (authority, secrets) =
            closed_with(&[("w", Role::Worker, None), ("u", Role::User, None), ("a", Role::Admin, None)]);
        let may = |path: &str, who: usize| authority.admit(path, Some(secrets[who].as_bytes())).is_ok();
        assert!(may("/testgrid.v1.WorkerService/Attach", 0) && !may("/testgrid.v1.WorkerService/Attach", 1));
        assert!(!may("/testgrid.v1.SessionService/Submit", 0) && may("/testgrid.v1.SessionService/Submit", 1));
        assert!(may("/testgrid.v1.BlobService/Download", 0) && may("/testgrid.v1.BlobService/Upload", 1));
        assert!(!may("/testgrid.v1.Unknown/Thing", 1) && may("/testgrid.v1.Unknown/Thing", 2));
        assert!((0..3).all(|who| may("/testgrid.v1.WorkerService/Attach", who) || who == 1));
        // Probes need no token; a wrong one is refused without saying more.
        assert!(authority.admit("/grpc.health.v1.Health/Check", None).is_ok());
        assert!(authority.admit("/grpc.health.v1.Health/Check", Some(b"Bearer tg_wrong")).is_ok(), "not looked at");
        let wrong = authority.admit("/testgrid.v1.SessionService/List", Some(b"Bearer tg_nope")).expect_err("refused");
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let denied =
            authority.admit("/testgrid.v1.SessionService/Submit", Some(secrets[0].as_bytes())).expect_err("no");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("user or admin"), "{}", denied.message());
        let long = vec![b'x'; MAX_HEADER_BYTES + 1];
        assert!(authority.admit("/testgrid.v1.SessionService/List", Some(&long)).is_err());
    }

    #[test]
    fn a_token_revoked_or_expired_is_refused_and_ends_its_streams() {
        let (authority, secrets) = closed_with(&[("u", Role::User, None), ("old", Role::User, Some(10))]);
        let identity = authority.admit("/testgrid.v1.SessionService/Watch", Some(secrets[0].as_bytes())).expect("ok");
        let expired = authority.admit("/testgrid.v1.SessionService/Watch", Some(secrets[1].as_bytes()));
        assert!(expired.expect_err("expired").message().contains("expired"));
        assert!(!identity.revoked.is_cancelled());
        let keep = authority.live.read().expect("lock").tokens.clone();
        authority.replace(keep.clone(), 2);
        assert!(!identity.revoked.is_cancelled(), "a reload that changes nothing ends nothing");
        authority.replace(keep.into_iter().filter(|t| t.name != "u").collect(), 3);
        assert!(identity.revoked.is_cancelled());
        assert!(authority.admit("/testgrid.v1.SessionService/Watch", Some(secrets[0].as_bytes())).is_err());
    }
}
