//! The user service's events: registrations, profile changes and what administrators change.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::DomainEvent;
use crate::rpc::Service;
use crate::user::PublicUser;

/// An event of the user service; `type` is its name (`user_registered`, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserEvent {
    /// A new account, as anyone may see it.
    UserRegistered { user: PublicUser },
    /// The user changed their public profile.
    ProfileUpdated { user: PublicUser },
    /// The administrator `by` disabled the account (its sessions are revoked).
    UserDisabled { user_id: Uuid, by: Uuid },
    /// The administrator `by` enabled the account again.
    UserEnabled { user_id: Uuid, by: Uuid },
    /// The administrator `by` set the account's roles.
    RolesChanged {
        user_id: Uuid,
        roles: Vec<String>,
        by: Uuid,
    },
    /// The administrator `by` created or changed role `name`; edges drop it from their
    /// permission caches.
    RoleDefined {
        name: String,
        permissions: Vec<String>,
        by: Uuid,
    },
    /// The administrator `by` deleted role `name` (its holders lost it).
    RoleDeleted { name: String, by: Uuid },
    /// The administrator `by` changed the account's direct permissions.
    PermissionsChanged {
        user_id: Uuid,
        permissions: Vec<String>,
        by: Uuid,
    },
    /// An event type this build does not know (written by a newer version): read, never
    /// written; consumers skip it.
    #[serde(other, skip_serializing)]
    Unknown,
}

impl DomainEvent for UserEvent {
    const SERVICE: Service = Service::User;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::round_trip;
    use crate::user::Sex;

    /// `UserEvent` is not `PartialEq` (its profile type is not), so the round trip compares the
    /// JSON of what was sent and what was read.
    #[derive(Debug)]
    struct Json(UserEvent);
    impl PartialEq for Json {
        fn eq(&self, other: &Self) -> bool {
            serde_json::to_value(&self.0).unwrap() == serde_json::to_value(&other.0).unwrap()
        }
    }
    impl Serialize for Json {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.serialize(s)
        }
    }
    impl<'de> Deserialize<'de> for Json {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            UserEvent::deserialize(d).map(Json)
        }
    }
    impl DomainEvent for Json {
        const SERVICE: Service = Service::User;
    }

    /// A number per variant; a new variant fails to compile here until it has a sample.
    fn ordinal(event: &UserEvent) -> usize {
        match event {
            UserEvent::UserRegistered { .. } => 0,
            UserEvent::ProfileUpdated { .. } => 1,
            UserEvent::UserDisabled { .. } => 2,
            UserEvent::UserEnabled { .. } => 3,
            UserEvent::RolesChanged { .. } => 4,
            UserEvent::RoleDefined { .. } => 5,
            UserEvent::RoleDeleted { .. } => 6,
            UserEvent::PermissionsChanged { .. } => 7,
            UserEvent::Unknown => usize::MAX,
        }
    }

    #[test]
    fn every_event_round_trips_under_its_name() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let user = PublicUser {
            id: a,
            nickname: "ann".into(),
            avatar: None,
            sex: Sex::Unspecified,
        };
        let samples = [
            UserEvent::UserRegistered { user: user.clone() },
            UserEvent::ProfileUpdated { user },
            UserEvent::UserDisabled { user_id: a, by: b },
            UserEvent::UserEnabled { user_id: a, by: b },
            UserEvent::RolesChanged {
                user_id: a,
                roles: vec!["user".into(), "admin".into()],
                by: b,
            },
            UserEvent::RoleDefined {
                name: "support".into(),
                permissions: vec!["users:read".into()],
                by: b,
            },
            UserEvent::RoleDeleted {
                name: "support".into(),
                by: b,
            },
            UserEvent::PermissionsChanged {
                user_id: a,
                permissions: vec!["audit:read".into()],
                by: b,
            },
        ];
        assert_eq!(
            samples.iter().map(ordinal).collect::<Vec<_>>(),
            (0..=7).collect::<Vec<_>>()
        );
        let names: Vec<String> = samples
            .into_iter()
            .map(|event| round_trip::check(&Json(event)))
            .collect();
        assert_eq!(
            names,
            [
                "user_registered",
                "profile_updated",
                "user_disabled",
                "user_enabled",
                "roles_changed",
                "role_defined",
                "role_deleted",
                "permissions_changed"
            ]
        );
    }
}
