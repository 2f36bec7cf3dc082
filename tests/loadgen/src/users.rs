//! Test users, reused between runs: their credentials, tokens and friendships are cached in a
//! JSON file keyed by the mesh URL, because registering and logging in hash a password (slow on
//! purpose) while refreshing a token is cheap.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt, stream};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::{Api, ApiError, TokenPair};

/// An access token must stay valid this long after a scenario starts (capped at half its
/// lifetime), or it is refreshed first: the edge closes sockets whose token expires.
const TOKEN_MARGIN_SECS: u64 = 600;

/// Loopback addresses registrations and logins are spread over.
const HASHING_ADDRESSES: u8 = 8;

/// A user ready to connect.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedUser {
    phone: String,
    password: String,
    #[serde(default)]
    user_id: Option<Uuid>,
    #[serde(default)]
    access_token: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    access_expires_at: u64,
    #[serde(default)]
    access_ttl: u64,
    #[serde(default)]
    refresh_token: Option<String>,
    /// Whether the bench administrator lifted this user's plan limits.
    #[serde(default)]
    quota_lifted: bool,
}

impl CachedUser {
    fn new_random() -> Self {
        let mut rng = rand::thread_rng();
        let phone = format!("+1555{:07}", rng.gen_range(0..10_000_000u32));
        let password: String = (&mut rng)
            .sample_iter(&Alphanumeric)
            .take(20)
            .map(char::from)
            .collect();
        Self {
            phone,
            password,
            user_id: None,
            access_token: None,
            access_expires_at: 0,
            access_ttl: 0,
            refresh_token: None,
            quota_lifted: false,
        }
    }

    fn ready(&self, now: u64) -> Option<User> {
        let margin = TOKEN_MARGIN_SECS.min(self.access_ttl / 2);
        let token = self.access_token.as_ref()?;
        let id = self.user_id?;
        (self.access_expires_at > now + margin).then(|| User {
            id,
            token: token.clone(),
        })
    }

    /// Drops the tokens: the next `Pool::users` signs this user in again.
    fn forget_tokens(&mut self) {
        self.access_token = None;
        self.refresh_token = None;
        self.access_expires_at = 0;
    }

    fn take_tokens(&mut self, pair: TokenPair, now: u64) {
        self.user_id = Some(pair.user_id);
        self.access_expires_at = now + pair.expires_in;
        self.access_ttl = pair.expires_in;
        self.access_token = Some(pair.access_token);
        self.refresh_token = Some(pair.refresh_token);
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MeshUsers {
    users: Vec<CachedUser>,
    /// Pairs of user ids known to be friends, lower id first.
    #[serde(default)]
    friends: Vec<(Uuid, Uuid)>,
    /// The bench administrator (a phone the mesh makes an admin at registration).
    #[serde(default)]
    admin: Option<CachedUser>,
}

/// The cache file: one entry per mesh URL.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    meshes: BTreeMap<String, MeshUsers>,
}

/// The users of one mesh, backed by the cache file.
pub struct Pool {
    api: Api,
    /// Clients from different loopback addresses for registering and logging in: the user
    /// service gives one address at most half of its hashing pool.
    hashing: Vec<Api>,
    path: PathBuf,
    file: CacheFile,
    /// How many password hashes (register, login) run at once.
    concurrency: usize,
    /// The phone of the bench administrator (`MESH_BOOTSTRAP_ADMINS` of the mesh), who lifts
    /// the plan limits of the users that send and own groups; `None` leaves them.
    admin_phone: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn ordered(a: Uuid, b: Uuid) -> (Uuid, Uuid) {
    if a <= b { (a, b) } else { (b, a) }
}

/// Registers one fresh user, drawing another phone number when the first is taken; the user
/// keeps the tokens of the session registering opened.
async fn register_one(api: &Api, index: usize) -> anyhow::Result<CachedUser> {
    for _ in 0..5 {
        let mut user = CachedUser::new_random();
        let nickname = format!("lg{index}");
        match api.register(&user.phone, &user.password, &nickname).await {
            Ok(pair) => {
                user.take_tokens(pair, unix_now());
                return Ok(user);
            }
            Err(err)
                if err
                    .downcast_ref::<ApiError>()
                    .is_some_and(|e| e.is("phone_taken")) => {}
            Err(err) => return Err(err),
        }
    }
    anyhow::bail!("five random phone numbers in a row were taken")
}

/// Gives `user` a fresh access token: refresh when it can, else log in. `None` when the
/// account is gone (the mesh's database was reset).
async fn renew(api: &Api, mut user: CachedUser, now: u64) -> anyhow::Result<Option<CachedUser>> {
    if let Some(refresh) = user.refresh_token.clone()
        && let Ok(pair) = api.refresh(&refresh).await
    {
        user.take_tokens(pair, now);
        return Ok(Some(user));
    }
    match api.login(&user.phone, &user.password).await {
        Ok(pair) => {
            user.take_tokens(pair, now);
            Ok(Some(user))
        }
        Err(err)
            if err
                .downcast_ref::<ApiError>()
                .is_some_and(|e| e.is("invalid_credentials")) =>
        {
            Ok(None)
        }
        Err(err) => Err(err.context(format!("logging in {}", user.phone))),
    }
}

impl Pool {
    pub fn load(
        api: Api,
        path: &Path,
        concurrency: usize,
        admin_phone: Option<String>,
    ) -> anyhow::Result<Self> {
        let file = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading the user cache {}", path.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => CacheFile::default(),
            Err(err) => return Err(err).context(format!("reading {}", path.display())),
        };
        let hashing = if api.base().starts_with("http://127.") {
            (1..=HASHING_ADDRESSES)
                .map(|i| {
                    let source = std::net::Ipv4Addr::new(127, 3, 0, i);
                    Api::new_from(api.base(), Some(source.into()))
                })
                .collect::<anyhow::Result<Vec<Api>>>()?
        } else {
            vec![api.clone()]
        };
        Ok(Self {
            api,
            hashing,
            path: path.to_owned(),
            file,
            concurrency: concurrency.max(1),
            admin_phone,
        })
    }

    fn entry(&mut self) -> &mut MeshUsers {
        self.file
            .meshes
            .entry(self.api.base().to_owned())
            .or_default()
    }

    fn save(&self) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // Passwords and tokens of test accounts: readable by this user only.
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(&serde_json::to_vec_pretty(&self.file)?)?;
        drop(file);
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("writing the user cache {}", self.path.display()))
    }

    /// The first `n` users, registered and logged in as needed, each with a token valid for the
    /// next minutes.
    pub async fn users(&mut self, n: usize) -> anyhow::Result<Vec<User>> {
        for _attempt in 0..3 {
            self.register_missing(n).await?;
            let now = unix_now();
            let stale: Vec<(usize, CachedUser)> = self.entry().users[..n]
                .iter()
                .enumerate()
                .filter(|(_, u)| u.ready(now).is_none())
                .map(|(i, u)| (i, u.clone()))
                .collect();
            if !stale.is_empty() {
                let started = Instant::now();
                eprintln!("renewing the tokens of {} users", stale.len());
                let hashing = self.hashing.clone();
                let renewed: Vec<(usize, Option<CachedUser>)> = stream::iter(stale)
                    .map(|(i, u)| {
                        let api = hashing[i % hashing.len()].clone();
                        async move { renew(&api, u, now).await.map(|r| (i, r)) }
                    })
                    .buffer_unordered(self.concurrency * 2)
                    .try_collect()
                    .await?;
                let entry = self.entry();
                let mut gone = HashSet::new();
                for (i, user) in renewed {
                    match user {
                        Some(user) => entry.users[i] = user,
                        None => {
                            gone.insert(i);
                        }
                    }
                }
                if !gone.is_empty() {
                    eprintln!(
                        "{} cached users no longer exist (was the database reset?); replacing them",
                        gone.len()
                    );
                    let mut index = 0;
                    entry.users.retain(|_| {
                        index += 1;
                        !gone.contains(&(index - 1))
                    });
                    let live: HashSet<Uuid> =
                        entry.users.iter().filter_map(|u| u.user_id).collect();
                    entry
                        .friends
                        .retain(|(a, b)| live.contains(a) && live.contains(b));
                }
                self.save()?;
                eprintln!("tokens renewed in {:.1?}", started.elapsed());
                if !gone.is_empty() {
                    continue;
                }
            }
            let now = unix_now();
            let users: Option<Vec<User>> = self.entry().users[..n]
                .iter()
                .map(|u| u.ready(now))
                .collect();
            if let Some(users) = users {
                return Ok(users);
            }
        }
        anyhow::bail!("could not get {n} users with valid tokens")
    }

    async fn register_missing(&mut self, n: usize) -> anyhow::Result<()> {
        let have = self.entry().users.len();
        if have >= n {
            return Ok(());
        }
        let started = Instant::now();
        eprintln!(
            "registering {} users ({} at a time; passwords are hashed slowly on purpose; progress is saved every 500)",
            n - have,
            self.concurrency
        );
        let hashing = self.hashing.clone();
        let mut fresh = stream::iter(have..n)
            .map(|i| {
                let api = hashing[i % hashing.len()].clone();
                async move { register_one(&api, i).await }
            })
            .buffer_unordered(self.concurrency);
        let mut result = Ok(());
        while let Some(user) = fresh.next().await {
            match user {
                Ok(user) => {
                    self.entry().users.push(user);
                    if self.entry().users.len().is_multiple_of(500) {
                        self.save()?;
                        eprintln!("{} users registered", self.entry().users.len());
                    }
                }
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        drop(fresh);
        self.save()?;
        result?;
        eprintln!("registered in {:.1?}", started.elapsed());
        Ok(())
    }

    /// A valid token of the bench administrator, registering them the first time.
    async fn admin_token(&mut self, phone: &str) -> anyhow::Result<String> {
        let now = unix_now();
        let cached = self.entry().admin.clone().filter(|a| a.phone == phone);
        if let Some(user) = cached.as_ref().and_then(|a| a.ready(now)) {
            return Ok(user.token);
        }
        let admin = match cached {
            Some(admin) => renew(&self.api, admin, now)
                .await?
                .with_context(|| format!("the bench administrator {phone} no longer exists"))?,
            None => {
                // Registering answers the session's tokens, with the administrator's role.
                let mut admin = CachedUser::new_random();
                admin.phone = phone.to_owned();
                let pair = self
                    .api
                    .register(phone, &admin.password, "loadgen admin")
                    .await
                    .with_context(|| {
                        format!(
                            "registering the bench administrator {phone} (taken by an account whose password is not in {}?)",
                            self.path.display()
                        )
                    })?;
                admin.take_tokens(pair, now);
                admin
            }
        };
        let token = admin.access_token.clone().context("no admin token")?;
        self.entry().admin = Some(admin);
        self.save()?;
        Ok(token)
    }

    /// Lifts the plan limits of `users` that are not lifted yet (when an administrator phone
    /// is configured).
    pub async fn lift_quotas(&mut self, users: &[User]) -> anyhow::Result<()> {
        let Some(phone) = self.admin_phone.clone() else {
            return Ok(());
        };
        let wanted: HashSet<Uuid> = users.iter().map(|u| u.id).collect();
        let todo: Vec<Uuid> = self
            .entry()
            .users
            .iter()
            .filter(|u| !u.quota_lifted)
            .filter_map(|u| u.user_id.filter(|id| wanted.contains(id)))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let token = self.admin_token(&phone).await?;
        eprintln!("lifting the plan limits of {} users", todo.len());
        let api = self.api.clone();
        let done: Vec<Uuid> = stream::iter(todo)
            .map(|id| {
                let api = api.clone();
                let token = token.clone();
                async move { api.lift_quota(&token, id).await.map(|()| id) }
            })
            .buffer_unordered(16)
            .try_collect()
            .await
            .context(
                "lifting plan limits (is LOADGEN_ADMIN_PHONE in the mesh's MESH_BOOTSTRAP_ADMINS?)",
            )?;
        let done: HashSet<Uuid> = done.into_iter().collect();
        for user in &mut self.entry().users {
            if user.user_id.is_some_and(|id| done.contains(&id)) {
                user.quota_lifted = true;
            }
        }
        self.save()
    }

    /// Forgets the cached tokens of the first `n` users, so the next `users` signs them in
    /// again. For a scenario that signed them in many times: the mesh keeps at most
    /// `MAX_SESSIONS_PER_USER` sessions per account and revokes the oldest beyond it, which
    /// may be the one whose tokens the cache holds.
    pub fn forget_tokens(&mut self, n: usize) -> anyhow::Result<()> {
        for user in self.entry().users.iter_mut().take(n) {
            user.forget_tokens();
        }
        self.save()
    }

    /// Phone and password of the first `n` users (registered by an earlier `users(n)`).
    pub fn credentials(&mut self, n: usize) -> Vec<(String, String)> {
        self.entry()
            .users
            .iter()
            .take(n)
            .map(|u| (u.phone.clone(), u.password.clone()))
            .collect()
    }

    /// Makes each pair friends, skipping pairs the cache knows to be friends already.
    pub async fn befriend(&mut self, pairs: &[(User, User)]) -> anyhow::Result<()> {
        let known: HashSet<(Uuid, Uuid)> = self.entry().friends.iter().copied().collect();
        let todo: Vec<&(User, User)> = pairs
            .iter()
            .filter(|(a, b)| !known.contains(&ordered(a.id, b.id)))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        eprintln!("making {} pairs of friends", todo.len());
        let api = self.api.clone();
        let done: Vec<(Uuid, Uuid)> = stream::iter(todo)
            .map(|(a, b)| {
                let api = api.clone();
                async move {
                    api.befriend((&a.token, a.id), (&b.token, b.id))
                        .await
                        .map(|()| ordered(a.id, b.id))
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        self.entry().friends.extend(done);
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stand-in for the mesh's auth routes: `register` answers a token pair, as the edge
    /// does, and `login` fails; every path asked is recorded.
    async fn fake_mesh() -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let record = asked.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let record = record.clone();
                tokio::spawn(async move {
                    let mut request = vec![0; 4096];
                    let read = socket.read(&mut request).await.unwrap();
                    let head = String::from_utf8_lossy(&request[..read]).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    record.lock().unwrap().push(path.clone());
                    let (status, body) = if path == "/v1/auth/register" {
                        let pair = json!({
                            "id": Uuid::nil(), "phone": "+15550000000", "nickname": "lg0",
                            "access_token": "access", "refresh_token": "refresh",
                            "expires_in": 900, "user_id": Uuid::nil(),
                        });
                        ("201 Created", pair.to_string())
                    } else {
                        ("500 Internal Server Error", "{}".to_owned())
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    socket.write_all(answer.as_bytes()).await.unwrap();
                });
            }
        });
        (base, asked)
    }

    #[tokio::test]
    async fn a_registered_user_is_ready_without_signing_in() {
        let (base, asked) = fake_mesh().await;
        let api = Api::new(&base).unwrap();
        let user = register_one(&api, 0).await.unwrap();
        let ready = user.ready(unix_now()).expect("tokens from registering");
        assert_eq!(ready.token, "access");
        assert_eq!(*asked.lock().unwrap(), vec!["/v1/auth/register"]);
    }

    #[tokio::test]
    async fn forgotten_tokens_are_renewed_before_use() {
        let (base, asked) = fake_mesh().await;
        let dir = std::env::temp_dir().join(format!("loadgen-users-{}", Uuid::new_v4()));
        let mut pool =
            Pool::load(Api::new(&base).unwrap(), &dir.join("users.json"), 1, None).unwrap();
        pool.register_missing(2).await.unwrap();
        let now = unix_now();
        assert!(pool.entry().users.iter().all(|u| u.ready(now).is_some()));
        pool.forget_tokens(1).unwrap();
        let ready: Vec<bool> = pool
            .entry()
            .users
            .iter()
            .map(|u| u.ready(now).is_some())
            .collect();
        assert_eq!(
            ready,
            vec![false, true],
            "only the first user's tokens are forgotten"
        );
        // The stand-in refuses sign-ins, so asking for the users now must try to sign the
        // first one in again rather than hand out the forgotten token.
        assert!(pool.users(1).await.is_err());
        assert_eq!(
            asked.lock().unwrap().last().map(String::as_str),
            Some("/v1/auth/login")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
