//! The grammar of `path()` patterns (Django's): literal text and `<converter:name>` or `<name>`
//! placeholders. One source for both crates: the runtime compiles patterns with it, and
//! `channels-macros` (through a symlink, as serde shares `serde_derive_internals`) checks them at
//! compile time with it, so the two can never disagree. It uses nothing but `core` and `alloc`.

/// The `path()` converters and the regex class each matches.
pub const PATH_CONVERTERS: &[(&str, &str)] = &[
    ("str", "[^/]+"),
    ("int", "[0-9]+"),
    ("slug", "[-a-zA-Z0-9_]+"),
    ("uuid", "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    ("path", ".+"),
];

/// One piece of a `path()` pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Text matched as is.
    Literal(&'a str),
    /// A placeholder: its name and the regex class of its converter.
    Param {
        /// The parameter's name (a URL kwarg).
        name: &'a str,
        /// The converter's regex class.
        class: &'static str,
    },
}

/// What is wrong with a `path()` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GrammarError {
    /// A `>` with no `<` before it.
    StrayClose,
    /// A `<` with no `>` after it.
    Unclosed,
    /// A placeholder name that is not an identifier.
    BadName(String),
    /// A parameter named twice.
    Duplicate(String),
    /// A converter that does not exist.
    UnknownConverter(String),
}

impl core::fmt::Display for GrammarError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GrammarError::StrayClose => f.write_str("`>` without `<`"),
            GrammarError::Unclosed => f.write_str("`<` without `>`"),
            GrammarError::BadName(name) => write!(f, "`{name}` is not a valid parameter name (letters, digits, `_`)"),
            GrammarError::Duplicate(name) => write!(f, "the parameter `{name}` appears twice"),
            GrammarError::UnknownConverter(converter) => {
                write!(f, "unknown path converter `{converter}`: use one of ")?;
                for (i, (known, _)) in PATH_CONVERTERS.iter().enumerate() {
                    write!(f, "{}{known}", if i == 0 { "" } else { ", " })?;
                }
                Ok(())
            }
        }
    }
}

/// True for a valid parameter name (a URL kwarg): an ASCII identifier.
pub(crate) fn is_param_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The pieces of a `path()` pattern, or the first thing wrong with it.
pub(crate) fn parse_path(pattern: &str) -> Result<Vec<Piece<'_>>, GrammarError> {
    let mut pieces = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('<') {
        let literal = &rest[..open];
        if literal.contains('>') {
            return Err(GrammarError::StrayClose);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        let after = &rest[open + 1..];
        let close = after.find('>').ok_or(GrammarError::Unclosed)?;
        let inner = &after[..close];
        let (converter, name) = inner.split_once(':').unwrap_or(("str", inner));
        let Some((_, class)) = PATH_CONVERTERS.iter().find(|(known, _)| *known == converter) else {
            return Err(GrammarError::UnknownConverter(converter.into()));
        };
        if !is_param_name(name) {
            return Err(GrammarError::BadName(name.into()));
        }
        if names.contains(&name) {
            return Err(GrammarError::Duplicate(name.into()));
        }
        names.push(name);
        pieces.push(Piece::Param { name, class });
        rest = &after[close + 1..];
    }
    if rest.contains('>') {
        return Err(GrammarError::StrayClose);
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest));
    }
    Ok(pieces)
}
