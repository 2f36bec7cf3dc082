//! What `Settings::parse` accepts, refuses and derives.

use clap::Parser;
use mesh_nats::Secret;

use super::*;
use crate::flags::Cli;

fn raw() -> RawSettings {
    let cli = Cli::try_parse_from(["mesh"]).unwrap();
    cli.raw
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut r = raw();
    r.prefix = "Bad Prefix".into();
    r.http_addr = "nowhere".into();
    r.access_ttl = "soon".into();
    r.database_url = None;
    let problems = Settings::parse(&r, Role::ALL, true).err().unwrap();
    let text = problems.join("\n");
    for name in [
        "MESH_PREFIX",
        "MESH_HTTP_ADDR",
        "MESH_ACCESS_TTL",
        "MESH_DATABASE_URL",
        "MESH_JWT_PRIVATE_KEY",
        "MESH_JWT_PUBLIC_KEY",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[test]
fn audit_records_are_kept_90_days_and_at_least_an_hour() {
    let settings = Settings::parse(&raw(), &[], false).unwrap();
    assert_eq!(
        settings.audit_retention,
        Duration::from_secs(90 * 24 * 3600)
    );
    let mut short = raw();
    short.audit_retention = "10m".into();
    let problems = Settings::parse(&short, &[], false).err().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("MESH_AUDIT_RETENTION")),
        "{problems:?}"
    );
    short.audit_retention = "1h".into();
    let kept = Settings::parse(&short, &[], false).unwrap().audit_retention;
    assert_eq!(kept, Duration::from_secs(3600));
}

#[test]
fn what_clients_make_the_mesh_keep_is_capped_at_a_gib_and_at_least_a_mib() {
    // The default as declared (the environment of a test run may set the variable).
    use clap::CommandFactory;
    let declared = Cli::command()
        .get_arguments()
        .find(|arg| arg.get_id() == "nats_kept_max_bytes")
        .and_then(|arg| arg.get_default_values().first().cloned())
        .expect("a default");
    assert_eq!(declared.to_str(), Some("1073741824"));
    let mut given = raw();
    given.nats_kept_max_bytes = "1073741824".into();
    let settings = Settings::parse(&given, &[], false).unwrap();
    assert_eq!(settings.nats_kept_max_bytes, 1 << 30);
    let mut small = raw();
    small.nats_kept_max_bytes = "1000".into();
    let problems = Settings::parse(&small, &[], false).err().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("MESH_NATS_KEPT_MAX_BYTES")),
        "{problems:?}"
    );
}

#[test]
fn defaults_are_valid_for_a_role_without_keys_or_database() {
    let settings = Settings::parse(&raw(), &[], false).unwrap();
    assert_eq!(settings.prefix.as_str(), "mesh");
    assert_eq!(settings.access_ttl, Duration::from_secs(900));
    assert_eq!(settings.public_url, "http://127.0.0.1:8080");
}

#[test]
fn a_server_listening_on_every_address_advertises_a_relative_url() {
    let mut listening = raw();
    listening.http_addr = "0.0.0.0:8080".into();
    let settings = Settings::parse(&listening, &[], false).unwrap();
    assert_eq!(
        settings.public_url, "/",
        "0.0.0.0 is no address a client can use"
    );
    listening.http_addr = "[::]:8080".into();
    assert_eq!(
        Settings::parse(&listening, &[], false).unwrap().public_url,
        "/"
    );
    listening.public_url = Some("https://chat.example.com".into());
    assert_eq!(
        Settings::parse(&listening, &[], false).unwrap().public_url,
        "https://chat.example.com"
    );
}

#[test]
fn an_edges_send_queue_must_hold_a_store_rounds_frames_for_one_user() {
    // What an edge refuses about its send queue (other problems, such as its missing keys,
    // left aside).
    let queue_problems =
        |raw: &RawSettings, roles: &[Role]| match Settings::parse(raw, roles, false) {
            Ok(_) => Vec::new(),
            Err(problems) => problems
                .into_iter()
                .filter(|p| p.starts_with("MESH_WS_SEND_QUEUE"))
                .collect(),
        };
    let mut small = raw();
    small.chat_batch_size = "1024".into();
    let refused = queue_problems(&small, &[Role::Edge]);
    assert!(
        refused.len() == 1 && refused[0].contains("8192") && refused[0].contains("16384"),
        "a queue of 4,096 against rounds of 8,192 frames: {refused:?}"
    );
    // Only an edge queues frames: a process without one starts with any queue setting.
    assert!(queue_problems(&small, &[]).is_empty());
    small.ws_send_queue = "16384".into();
    assert!(
        queue_problems(&small, &[Role::Edge]).is_empty(),
        "two rounds fit"
    );
    assert!(
        queue_problems(&raw(), &[Role::Edge]).is_empty(),
        "the defaults fit"
    );
}

#[test]
fn the_default_send_queue_holds_two_rounds_of_frames_for_one_user() {
    let settings = Settings::parse(&raw(), &[], false).unwrap();
    let round = mesh_chat::most_frames_per_round(settings.chat.batch_size);
    assert!(
        settings.ws.send_queue >= 2 * round,
        "a send queue of {} frames, a round of {round}",
        settings.ws.send_queue
    );
}

#[test]
fn social_database_defaults_to_the_shared_one() {
    let mut r = raw();
    r.database_url = Some("postgres://shared/db".into());
    let settings = Settings::parse(&r, &[Role::Social], false).unwrap();
    assert_eq!(social_url(&settings), "postgres://shared/db");
    r.social_database_url = Some("postgres://own/db".into());
    let settings = Settings::parse(&r, &[Role::Social], false).unwrap();
    assert_eq!(social_url(&settings), "postgres://own/db");
    r.database_url = None;
    r.social_database_url = None;
    let problems = Settings::parse(&r, &[Role::Social], false).err().unwrap();
    assert!(problems.join("\n").contains("MESH_SOCIAL_DATABASE_URL"));
}

#[test]
fn nats_logins_are_checked_and_each_role_gets_its_own_inbox() {
    let mut r = raw();
    r.nats_url = "nats://a:4222,http://b:4222".into();
    r.nats_user = Some("edge".into());
    r.nats_token = Some(Secret::new("t"));
    r.nats_replicas = "7".into();
    r.nats_role_credentials = Some("/nonexistent/role-credentials".into());
    let text = Settings::parse(&r, &[], false).err().unwrap().join("\n");
    for name in [
        "MESH_NATS_URL",
        "MESH_NATS_PASSWORD",
        "one of",
        "MESH_NATS_REPLICAS",
        "MESH_NATS_ROLE_CREDENTIALS",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    let mut r = raw();
    r.nats_url = "nats://a:4222, nats://b:4222".into();
    r.nats_user = Some("edge".into());
    r.nats_password = Some(Secret::new("pw"));
    let settings = Settings::parse(&r, &[], false).unwrap();
    let edge = settings.nats_credentials_for(NatsRole::Edge);
    assert_eq!(edge.user.as_deref(), Some("edge"));
    assert_eq!(edge.inbox_prefix.as_deref(), Some("_INBOX.mesh.edge"));
    let chat = settings.nats_credentials_for(NatsRole::Chat);
    assert_eq!(chat.inbox_prefix.as_deref(), Some("_INBOX.mesh.chat"));
}

#[test]
fn bootstrap_phones_are_normalised() {
    let mut r = raw();
    r.bootstrap_admins = "123456, +7654321,".into();
    let settings = Settings::parse(&r, &[], false).unwrap();
    assert_eq!(settings.bootstrap_admin_phones, vec!["+123456", "+7654321"]);
}

fn social_url(settings: &Settings) -> &str {
    &settings
        .roles
        .social
        .as_ref()
        .expect("the social role")
        .database_url
}

#[test]
fn each_role_gets_only_its_own_part() {
    let mut r = raw();
    r.database_url = Some("postgres://shared/db".into());
    let settings = Settings::parse(&r, &[Role::Chat], false).unwrap();
    assert!(settings.roles.chat.is_some());
    assert!(settings.roles.edge.is_none() && settings.roles.user.is_none());
    assert!(settings.roles.social.is_none() && settings.roles.outbox.is_none());
    assert!(settings.migrate.is_none());
    let settings = Settings::parse(&r, &[], true).unwrap();
    let databases = settings.migrate.expect("migrations need every database");
    assert_eq!(databases.audit, "postgres://shared/db");
}

#[test]
fn a_missing_database_is_reported_once_with_everything_that_needs_it() {
    // No database from the environment either (the test command exports one).
    let mut r = raw();
    r.database_url = None;
    r.user_database_url = None;
    r.social_database_url = None;
    r.chat_database_url = None;
    let problems = Settings::parse(&r, &[Role::User, Role::Outbox], true)
        .err()
        .unwrap();
    let shared: Vec<_> = problems
        .iter()
        .filter(|p| p.starts_with("MESH_DATABASE_URL"))
        .collect();
    assert_eq!(shared.len(), 1, "{problems:?}");
    for needer in ["the user role", "the outbox role", "migrations"] {
        assert!(
            shared[0].contains(needer),
            "{needer} missing from {shared:?}"
        );
    }
}

#[test]
fn hash_threads_default_to_the_cpus_up_to_eight_and_are_checked() {
    assert_eq!(hash_threads(None, Some(64)), Ok(8), "a node's 64 cores");
    assert_eq!(hash_threads(None, Some(4)), Ok(4));
    assert_eq!(hash_threads(Some(""), Some(1)), Ok(1));
    assert_eq!(hash_threads(None, None), Ok(2));
    assert_eq!(hash_threads(Some(" 12 "), Some(64)), Ok(12));
    for bad in ["0", "-1", "many", "257"] {
        assert!(hash_threads(Some(bad), Some(4)).is_err(), "{bad}");
    }
    let mut r = raw();
    r.user_hash_threads = Some("0".into());
    let problems = Settings::parse(&r, &[], false).err().unwrap().join("\n");
    assert!(problems.contains("MESH_USER_HASH_THREADS"), "{problems}");
    r.user_hash_threads = Some("3".into());
    assert_eq!(
        Settings::parse(&r, &[], false).unwrap().user_hash_threads,
        3
    );
}

#[test]
fn store_chains_are_at_most_the_store_rounds() {
    let chain_problems = |raw: &RawSettings| match Settings::parse(raw, &[], false) {
        Ok(settings) => {
            assert!(settings.chat.store_chains >= 1);
            Vec::new()
        }
        Err(problems) => problems
            .into_iter()
            .filter(|p| p.starts_with("MESH_CHAT_STORE_CHAINS"))
            .collect(),
    };
    let mut settings = raw();
    assert!(
        chain_problems(&settings).is_empty(),
        "the defaults: two chains sharing four rounds"
    );
    settings.chat_store_chains = "5".into();
    let refused = chain_problems(&settings);
    assert!(
        refused.len() == 1 && refused[0].contains("must be 1-4"),
        "five chains cannot share four rounds: {refused:?}"
    );
    settings.chat_store_rounds = "8".into();
    assert!(chain_problems(&settings).is_empty(), "eight rounds: 5 fit");
    for bad in ["0", "two"] {
        settings.chat_store_chains = bad.into();
        assert_eq!(chain_problems(&settings).len(), 1, "{bad} is refused");
    }
}
