//! `mesh`: parses flags and environment, then runs the chosen role(s). Nothing else lives here.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use mesh_contracts::Prefix;
use mesh_contracts::nats_permissions::Scope;
use nats_mesh::flags::{Cli, RoleArg};
use nats_mesh::private_file::write_private;
use nats_mesh::{Role, Settings, roles};
use tokio_util::sync::CancellationToken;

/// mimalloc returns freed memory to the system; glibc's malloc kept argon2's 19 MiB blocks
/// after a login burst (hundreds of MiB that never came back).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let role = cli.role.clone().unwrap_or(RoleArg::All);
    if let RoleArg::Keygen { out, force } = &role {
        return report(keygen(out, *force));
    }
    if let RoleArg::NatsConfig { out, any_prefix } = &role {
        return report(nats_config(&cli.raw.prefix, out, *any_prefix));
    }
    let (roles, migrate): (&[Role], bool) = match role {
        RoleArg::All => (Role::ALL, false),
        RoleArg::Edge => (&[Role::Edge], false),
        RoleArg::User => (&[Role::User], false),
        RoleArg::Social => (&[Role::Social], false),
        RoleArg::Chat => (&[Role::Chat], false),
        RoleArg::Outbox => (&[Role::Outbox], false),
        RoleArg::Migrate => (&[], true),
        RoleArg::Keygen { .. } | RoleArg::NatsConfig { .. } => unreachable!("handled above"),
    };
    let settings = match Settings::parse(&cli.raw, roles, migrate) {
        Ok(settings) => settings,
        Err(problems) => {
            eprintln!("invalid configuration:");
            for problem in problems {
                eprintln!("  - {problem}");
            }
            return ExitCode::from(2);
        }
    };
    // Named, so `top -H` and per-thread CPU tell the mesh's threads from other Tokio programs.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mesh-worker")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return report(Err(err.into())),
    };
    report(runtime.block_on(async move {
        let _tracing = mesh_observability::init(
            &nats_mesh::telemetry::service_name(roles, migrate),
            &nats_mesh::telemetry::default_db_service(roles, migrate),
            &[mesh_nats::CLIENT_LOG_TARGET],
        );
        nats_mesh::telemetry::record_build_info(roles);
        if let Some(databases) = &settings.migrate {
            roles::migrate(&settings, databases).await?;
            tracing::info!("migrations applied");
            return Ok(());
        }
        let listener = if roles.contains(&Role::Edge) {
            let listener = std::net::TcpListener::bind(settings.http_addr)?;
            tracing::info!(addr = %listener.local_addr()?, "edge listening");
            Some(listener)
        } else {
            None
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        roles::run(settings, listener, shutdown).await
    }))
}

/// Cancels on Ctrl-C or SIGTERM (how Kubernetes stops a pod).
async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    token.cancel();
}

fn keygen(out: &Path, force: bool) -> anyhow::Result<()> {
    let private = out.join("jwt_ed25519.pem");
    let public = out.join("jwt_ed25519.pub.pem");
    if !force && (private.exists() || public.exists()) {
        anyhow::bail!(
            "{} already has keys; pass --force to replace them",
            out.display()
        );
    }
    let pair = mesh_user::keys::generate()?;
    std::fs::create_dir_all(out)?;
    write_private(&private, &pair.private_pem)?;
    std::fs::write(&public, &pair.public_pem)?;
    println!("MESH_JWT_PRIVATE_KEY={}", private.display());
    println!("MESH_JWT_PUBLIC_KEY={}", public.display());
    Ok(())
}

/// Writes the NATS authorization for the prefix (or any prefix) and the role credentials.
fn nats_config(prefix: &str, out: &Path, any_prefix: bool) -> anyhow::Result<()> {
    let scope = if any_prefix {
        Scope::AnyPrefix
    } else {
        Scope::Exact(Prefix::parse(prefix)?)
    };
    let written = nats_mesh::nats_config::write(out, &scope)?;
    println!("MESH_NATS_AUTH_CONF={}", written.authorization.display());
    println!(
        "MESH_NATS_ROLE_CREDENTIALS={}",
        written.role_credentials.display()
    );
    Ok(())
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mesh: {err:#}");
            ExitCode::FAILURE
        }
    }
}
