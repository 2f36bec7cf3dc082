//! Whole-mesh tests: every role runs in-process against the real NATS and Postgres started by
//! `scripts/services.sh`, each test with its own database and prefix, driven only over HTTP.

mod harness;
mod ws;

mod admin_sessions;
mod admission;
mod asyncapi;
mod audit;
mod auth;
mod chat;
mod chat_contract;
mod chat_faults;
mod console;
mod database_collation;
mod discovery;
mod edge;
mod edge_hardening;
mod events;
mod faults;
mod fencing;
mod group_push;
mod ingest_compaction;
mod ingest_lines;
mod moderation;
mod nats_cluster;
mod nats_credentials;
mod nats_security;
mod nats_server;
mod notifications;
mod ordered_sender;
mod otlp;
mod partition_resets;
mod quotas;
mod rbac;
mod realtime;
mod social_friends;
mod social_groups;
mod tracing;
mod users;
