//! Channels' naming rules for channels and groups.

use super::LayerError;

/// Names are shorter than this (Channels' `MAX_NAME_LENGTH`).
const MAX_NAME_LENGTH: usize = 100;

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn invalid(kind: &'static str, name: &str, rule: &'static str) -> LayerError {
    LayerError::InvalidName { kind, name: name.to_owned(), rule }
}

/// Checks a channel name: ASCII letters, digits, `-`, `_`, `.`, at most one `!` (process-local
/// channels) with a non-empty part before it, shorter than 100 characters.
///
/// # Errors
/// [`LayerError::InvalidName`] naming the rule.
pub fn validate_channel_name(name: &str) -> Result<(), LayerError> {
    if name.len() >= MAX_NAME_LENGTH {
        return Err(invalid("channel", name, "names are shorter than 100 characters"));
    }
    let (head, tail) = match name.split_once('!') {
        Some((head, tail)) => (head, Some(tail)),
        None => (name, None),
    };
    if head.is_empty() {
        return Err(invalid("channel", name, "names are not empty (and do not start with `!`)"));
    }
    if !head.chars().all(allowed) || tail.is_some_and(|tail| !tail.chars().all(allowed)) {
        return Err(invalid("channel", name, "names hold ASCII letters, digits, `-`, `_`, `.` and at most one `!`"));
    }
    Ok(())
}

/// Checks a group name: ASCII letters, digits, `-`, `_`, `.`, shorter than 100 characters.
///
/// # Errors
/// [`LayerError::InvalidName`] naming the rule.
pub fn validate_group_name(name: &str) -> Result<(), LayerError> {
    if name.len() >= MAX_NAME_LENGTH {
        return Err(invalid("group", name, "names are shorter than 100 characters"));
    }
    if name.is_empty() || !name.chars().all(allowed) {
        return Err(invalid("group", name, "names are non-empty ASCII letters, digits, `-`, `_` and `.`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_follow_channels_rules() {
        assert!(validate_channel_name("chat.lobby-1_x").is_ok());
        assert!(validate_channel_name("specific.abc!def").is_ok());
        assert!(validate_channel_name("specific.abc!").is_ok());
        for bad in ["", "!x", "a!b!c", "sp ace", "ünï", &"x".repeat(100)] {
            assert!(matches!(validate_channel_name(bad), Err(LayerError::InvalidName { .. })), "{bad:?}");
        }
        assert!(validate_channel_name(&"x".repeat(99)).is_ok());
    }

    #[test]
    fn group_names_follow_channels_rules() {
        assert!(validate_group_name("room.lobby").is_ok());
        for bad in ["", "a!b", "a/b", &"g".repeat(100)] {
            assert!(matches!(validate_group_name(bad), Err(LayerError::InvalidName { .. })), "{bad:?}");
        }
    }
}
