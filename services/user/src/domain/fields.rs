//! Account fields parsed once at the boundary ("parse, don't validate").

use mesh_contracts::ServiceError;
use mesh_contracts::user::{
    MAX_ACCOUNT_QUERY_CHARS, MAX_AVATAR_LEN, MAX_DEVICE_NAME_CHARS, MAX_NICKNAME_CHARS,
    MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS,
};
use uuid::Uuid;

use super::invalid;

/// A phone number normalised to `+` and 6 to 15 digits (E.164 length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        let raw = raw.trim();
        let digits = raw.strip_prefix('+').unwrap_or(raw);
        if !(6..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "phone",
                "must be an optional '+' followed by 6 to 15 digits",
            ));
        }
        Ok(Self(format!("+{digits}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name: trimmed, 1 to 32 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nickname(String);

impl Nickname {
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 {
            return Err(invalid("nickname", "must not be blank"));
        }
        if chars > MAX_NICKNAME_CHARS {
            return Err(invalid(
                "nickname",
                &format!("at most {MAX_NICKNAME_CHARS} characters"),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(invalid("nickname", "must not contain control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password within the accepted length; never logged or echoed.
pub struct Password(String);

impl Password {
    pub fn parse(raw: String) -> Result<Self, ServiceError> {
        let chars = raw.chars().count();
        if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
            return Err(invalid(
                "password",
                &format!("must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"),
            ));
        }
        Ok(Self(raw))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An avatar URL (http or https). An empty string means "no avatar".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avatar(Option<String>);

impl Avatar {
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(Self(None));
        }
        if raw.len() > MAX_AVATAR_LEN {
            return Err(invalid(
                "avatar",
                &format!("at most {MAX_AVATAR_LEN} bytes"),
            ));
        }
        let has_scheme = raw.starts_with("https://") || raw.starts_with("http://");
        if !has_scheme || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("avatar", "must be an http(s) URL without spaces"));
        }
        Ok(Self(Some(raw.to_owned())))
    }

    pub fn into_inner(self) -> Option<String> {
        self.0
    }
}

/// A device label for the session list: trimmed, at most 64 characters; blank means none.
pub fn device_name(raw: Option<&str>) -> Result<Option<String>, ServiceError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if raw.chars().count() > MAX_DEVICE_NAME_CHARS || raw.chars().any(char::is_control) {
        return Err(invalid(
            "device_name",
            &format!("at most {MAX_DEVICE_NAME_CHARS} characters, no control characters"),
        ));
    }
    Ok(Some(raw.to_owned()))
}

/// An administrator's account search: trimmed, 1 to 64 characters, no control characters.
/// It matches a nickname containing it (any case), a phone starting with it when it looks like
/// the start of one (digits, optionally after `+`), or the account whose id it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountQuery(String);

impl AccountQuery {
    /// `None` for an absent or blank search (every account).
    pub fn parse(raw: Option<&str>) -> Result<Option<Self>, ServiceError> {
        let Some(text) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        if text.chars().count() > MAX_ACCOUNT_QUERY_CHARS || text.chars().any(char::is_control) {
            return Err(invalid(
                "q",
                &format!("at most {MAX_ACCOUNT_QUERY_CHARS} characters, no control characters"),
            ));
        }
        Ok(Some(Self(text.to_owned())))
    }

    pub fn text(&self) -> &str {
        &self.0
    }

    /// The normalised phone prefix (`+` and digits) this search stands for, if any.
    pub fn phone_prefix(&self) -> Option<String> {
        let digits = self.0.strip_prefix('+').unwrap_or(&self.0);
        (!digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| format!("+{digits}"))
    }

    /// The account id this search names, if it is one.
    pub fn id(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.0).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_normalised_and_bounded() {
        assert_eq!(
            Phone::parse("+8613800000000").unwrap().as_str(),
            "+8613800000000"
        );
        assert_eq!(Phone::parse(" 123456 ").unwrap().as_str(), "+123456");
        for bad in [
            "",
            "+",
            "12345",
            "1234567890123456",
            "+12a456",
            "++123456",
            "123 456",
        ] {
            assert!(Phone::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nicknames_are_trimmed_and_bounded_in_characters() {
        assert_eq!(Nickname::parse("  Ann ").unwrap().as_str(), "Ann");
        assert!(Nickname::parse(&"é".repeat(32)).is_ok());
        assert!(Nickname::parse(&"é".repeat(33)).is_err());
        assert!(Nickname::parse("   ").is_err());
        assert!(Nickname::parse("a\u{0007}b").is_err());
    }

    #[test]
    fn passwords_are_bounded() {
        assert!(Password::parse("1234567".into()).is_err());
        assert!(Password::parse("12345678".into()).is_ok());
        assert!(Password::parse("x".repeat(128)).is_ok());
        assert!(Password::parse("x".repeat(129)).is_err());
    }

    #[test]
    fn avatars_must_be_http_urls() {
        assert_eq!(Avatar::parse("").unwrap().into_inner(), None);
        assert_eq!(
            Avatar::parse("https://a.example/x.png")
                .unwrap()
                .into_inner()
                .as_deref(),
            Some("https://a.example/x.png")
        );
        assert!(Avatar::parse("javascript:alert(1)").is_err());
        assert!(Avatar::parse("https://a b").is_err());
        assert!(Avatar::parse(&format!("https://{}", "a".repeat(600))).is_err());
    }

    #[test]
    fn device_names_are_optional_and_bounded() {
        assert_eq!(device_name(None).unwrap(), None);
        assert_eq!(device_name(Some("  ")).unwrap(), None);
        assert_eq!(
            device_name(Some(" phone ")).unwrap().as_deref(),
            Some("phone")
        );
        assert!(device_name(Some(&"d".repeat(65))).is_err());
    }

    #[test]
    fn account_queries_are_trimmed_bounded_and_read_three_ways() {
        assert_eq!(AccountQuery::parse(None).unwrap(), None);
        assert_eq!(AccountQuery::parse(Some("  ")).unwrap(), None);
        let q = AccountQuery::parse(Some(" 1555 ")).unwrap().unwrap();
        assert_eq!(q.text(), "1555");
        assert_eq!(q.phone_prefix().as_deref(), Some("+1555"));
        assert_eq!(q.id(), None);
        let plus = AccountQuery::parse(Some("+86")).unwrap().unwrap();
        assert_eq!(plus.phone_prefix().as_deref(), Some("+86"));
        for not_phone in ["+", "an%n", "12a", "1234567890123456"] {
            let q = AccountQuery::parse(Some(not_phone)).unwrap().unwrap();
            assert_eq!(q.phone_prefix(), None, "{not_phone}");
        }
        let id = Uuid::now_v7();
        let by_id = AccountQuery::parse(Some(&id.to_string())).unwrap().unwrap();
        assert_eq!(by_id.id(), Some(id));
        assert!(AccountQuery::parse(Some(&"é".repeat(64))).is_ok());
        assert!(AccountQuery::parse(Some(&"é".repeat(65))).is_err());
        assert!(AccountQuery::parse(Some("a\u{0}b")).is_err());
    }
}
