//! Request fields parsed once at the boundary ("parse, don't validate"): texts are trimmed and
//! bounded in characters, URLs checked, limits and durations range-checked.

use mesh_contracts::ServiceError;
use mesh_contracts::social::{
    DEFAULT_GROUP_MEMBERS, MAX_ANNOUNCEMENT_CHARS, MAX_GROUP_ICON_LEN, MAX_GROUP_MEMBERS,
    MAX_GROUP_NAME_CHARS, MAX_MUTE_SECS, MAX_REMARK_CHARS, MAX_REQUEST_MESSAGE_CHARS,
    MIN_GROUP_MEMBERS,
};
use time::{Duration, OffsetDateTime};

use super::invalid;

/// Whether a text may span lines (messages, announcements) or must be one line (names).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lines {
    One,
    Many,
}

/// Trims `raw` and bounds it; a blank text is `None`.
fn text(
    field: &str,
    raw: Option<&str>,
    max_chars: usize,
    lines: Lines,
) -> Result<Option<String>, ServiceError> {
    let Some(trimmed) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if trimmed.chars().count() > max_chars {
        return Err(invalid(field, &format!("at most {max_chars} characters")));
    }
    let bad = |c: char| c.is_control() && !(lines == Lines::Many && (c == '\n' || c == '\t'));
    if trimmed.chars().any(bad) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(Some(trimmed.to_owned()))
}

/// The greeting of a friend or join request; blank means none.
pub fn request_message(raw: Option<&str>) -> Result<Option<String>, ServiceError> {
    text("message", raw, MAX_REQUEST_MESSAGE_CHARS, Lines::Many)
}

/// The caller's private name for a friend; blank clears it.
pub fn remark(raw: Option<&str>) -> Result<Option<String>, ServiceError> {
    text("remark", raw, MAX_REMARK_CHARS, Lines::One)
}

/// A group name: 1 to 64 characters on one line.
pub fn group_name(raw: &str) -> Result<String, ServiceError> {
    text("name", Some(raw), MAX_GROUP_NAME_CHARS, Lines::One)?
        .ok_or_else(|| invalid("name", "must not be blank"))
}

/// A group announcement; blank clears it.
pub fn announcement(raw: &str) -> Result<Option<String>, ServiceError> {
    text(
        "announcement",
        Some(raw),
        MAX_ANNOUNCEMENT_CHARS,
        Lines::Many,
    )
}

/// A group icon: an http(s) URL without spaces; blank clears it.
pub fn icon(raw: &str) -> Result<Option<String>, ServiceError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.len() > MAX_GROUP_ICON_LEN {
        return Err(invalid(
            "icon",
            &format!("at most {MAX_GROUP_ICON_LEN} bytes"),
        ));
    }
    let has_scheme = raw.starts_with("https://") || raw.starts_with("http://");
    if !has_scheme || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("icon", "must be an http(s) URL without spaces"));
    }
    Ok(Some(raw.to_owned()))
}

/// How many members a group may have, the owner included.
pub fn max_members(raw: Option<u32>) -> Result<u32, ServiceError> {
    let value = raw.unwrap_or(DEFAULT_GROUP_MEMBERS);
    if !(MIN_GROUP_MEMBERS..=MAX_GROUP_MEMBERS).contains(&value) {
        return Err(invalid(
            "max_members",
            &format!("must be {MIN_GROUP_MEMBERS} to {MAX_GROUP_MEMBERS}"),
        ));
    }
    Ok(value)
}

/// Until when a mute lasts (`None` unmutes), counted from `now`.
pub fn mute_until(
    muted: bool,
    duration_secs: Option<u64>,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, ServiceError> {
    if !muted {
        return Ok(None);
    }
    match duration_secs {
        Some(secs) if (1..=MAX_MUTE_SECS).contains(&secs) => {
            // In range, so the conversion cannot overflow.
            Ok(Some(now + Duration::seconds(secs as i64)))
        }
        _ => Err(invalid(
            "duration_secs",
            &format!("give 1 to {MAX_MUTE_SECS} seconds to mute"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_trimmed_optional_and_bounded() {
        assert_eq!(request_message(None).unwrap(), None);
        assert_eq!(request_message(Some("   ")).unwrap(), None);
        assert_eq!(
            request_message(Some(" hi\nthere ")).unwrap().as_deref(),
            Some("hi\nthere")
        );
        assert!(request_message(Some(&"é".repeat(MAX_REQUEST_MESSAGE_CHARS))).is_ok());
        assert!(request_message(Some(&"é".repeat(MAX_REQUEST_MESSAGE_CHARS + 1))).is_err());
        assert!(request_message(Some("a\u{0007}")).is_err());
    }

    #[test]
    fn remarks_are_one_line() {
        assert_eq!(remark(Some(" Bob ")).unwrap().as_deref(), Some("Bob"));
        assert_eq!(remark(Some("")).unwrap(), None);
        assert!(remark(Some("a\nb")).is_err());
        assert!(remark(Some(&"x".repeat(MAX_REMARK_CHARS + 1))).is_err());
    }

    #[test]
    fn group_names_must_not_be_blank() {
        assert_eq!(group_name("  Team ").unwrap(), "Team");
        assert!(group_name("   ").is_err());
        assert!(group_name(&"n".repeat(MAX_GROUP_NAME_CHARS + 1)).is_err());
        assert!(group_name(&"n".repeat(MAX_GROUP_NAME_CHARS)).is_ok());
    }

    #[test]
    fn announcements_may_be_cleared() {
        assert_eq!(announcement("").unwrap(), None);
        assert_eq!(announcement("a\nb").unwrap().as_deref(), Some("a\nb"));
        assert!(announcement(&"a".repeat(MAX_ANNOUNCEMENT_CHARS + 1)).is_err());
    }

    #[test]
    fn icons_must_be_http_urls() {
        assert_eq!(icon("").unwrap(), None);
        assert_eq!(
            icon(" https://x.example/i.png ").unwrap().as_deref(),
            Some("https://x.example/i.png")
        );
        assert!(icon("ftp://x").is_err());
        assert!(icon("https://a b").is_err());
        assert!(icon(&format!("https://{}", "a".repeat(MAX_GROUP_ICON_LEN))).is_err());
    }

    #[test]
    fn member_limits_are_bounded() {
        assert_eq!(max_members(None).unwrap(), DEFAULT_GROUP_MEMBERS);
        assert_eq!(max_members(Some(2)).unwrap(), 2);
        assert!(max_members(Some(1)).is_err());
        assert!(max_members(Some(MAX_GROUP_MEMBERS + 1)).is_err());
    }

    #[test]
    fn mutes_need_a_bounded_duration() {
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(mute_until(false, Some(5), now).unwrap(), None);
        assert_eq!(
            mute_until(true, Some(60), now).unwrap(),
            Some(now + Duration::seconds(60))
        );
        assert!(mute_until(true, None, now).is_err());
        assert!(mute_until(true, Some(0), now).is_err());
        assert!(mute_until(true, Some(MAX_MUTE_SECS + 1), now).is_err());
    }
}
