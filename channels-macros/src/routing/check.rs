//! Compile-time checks of a route table: protocol keys, patterns (path converters, regex
//! syntax), duplicate routes. Consumer/route compatibility is checked by the expansion's
//! `const` items, since only the compiler can see the consumer types.

use regex_syntax::hir::{Hir, HirKind};

use super::parse::{Key, Pattern, PatternKind, Route, Table, Target};
use crate::diag::Errors;
use crate::path_grammar::{GrammarError, Piece, parse_path};

pub(crate) fn check(table: &Table) -> syn::Result<()> {
    let mut errors = Errors::default();
    let mut seen: Vec<String> = Vec::new();
    for entry in &table.entries {
        match protocol_of(&entry.key) {
            Ok(protocol) if seen.contains(&protocol) => match &entry.key {
                Key::Ident(ident) => errors.on(ident, format!("`{protocol}` appears twice; merge its routes")),
                Key::Custom(lit) => errors.on(lit, format!("`{protocol}` appears twice; merge its routes")),
            },
            Ok(protocol) => seen.push(protocol),
            Err(err) => errors.push(err),
        }
        check_target(&entry.target, &mut errors);
    }
    errors.finish()
}

/// The protocol name a key stands for.
pub(crate) fn protocol_of(key: &Key) -> syn::Result<String> {
    match key {
        Key::Ident(ident) if ident == "http" || ident == "websocket" => Ok(ident.to_string()),
        Key::Ident(ident) => Err(syn::Error::new_spanned(
            ident,
            format!(
                "unknown protocol `{ident}`: expected `http`, `websocket`, or a custom protocol's name as a string \
                 literal (`\"{ident}\": ...`)"
            ),
        )),
        Key::Custom(lit) => {
            let name = lit.value();
            if name == "http" || name == "websocket" {
                Err(syn::Error::new_spanned(lit, format!("`{name}` is built in: write `{name}:` without quotes")))
            } else if name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            {
                Err(syn::Error::new_spanned(
                    lit,
                    "a protocol name is non-empty ASCII letters, digits, `.`, `-` and `_`",
                ))
            } else {
                Ok(name)
            }
        }
    }
}

fn check_target(target: &Target, errors: &mut Errors) {
    match target {
        Target::Routes(routes) => {
            for (i, route) in routes.iter().enumerate() {
                if let Err(message) = captures(&route.pattern) {
                    errors.on(&route.pattern.lit, message);
                }
                if routes[..i].iter().any(|earlier| same_pattern(earlier, route)) {
                    errors.on(
                        &route.pattern.lit,
                        format!(
                            "the route {:?} is already in this router; the first one always wins, so this one \
                             could never match: remove one",
                            route.pattern.lit.value()
                        ),
                    );
                }
                check_target(&route.target, errors);
            }
        }
        Target::Wrapper { inner, .. } => check_target(inner, errors),
        Target::Consumer(_) | Target::Expr(_) => {}
    }
}

fn same_pattern(a: &Route, b: &Route) -> bool {
    a.pattern.kind == b.pattern.kind && a.pattern.lit.value() == b.pattern.lit.value()
}

/// The kwargs a pattern captures, or what is wrong with it.
pub(crate) fn captures(pattern: &Pattern) -> Result<Vec<String>, String> {
    let source = pattern.lit.value();
    match pattern.kind {
        PatternKind::Path => path_captures(&source),
        PatternKind::Regex => {
            let hir = regex_syntax::Parser::new().parse(&source).map_err(|err| format!("invalid regex: {err}"))?;
            let mut names = Vec::new();
            regex_names(&hir, &mut names);
            Ok(names)
        }
    }
}

fn regex_names(hir: &Hir, names: &mut Vec<String>) {
    match hir.kind() {
        HirKind::Capture(capture) => {
            if let Some(name) = &capture.name {
                names.push(name.to_string());
            }
            regex_names(&capture.sub, names);
        }
        HirKind::Repetition(repetition) => regex_names(&repetition.sub, names),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => subs.iter().for_each(|sub| regex_names(sub, names)),
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) | HirKind::Look(_) => {}
    }
}

/// A `path()` pattern's `<converter:name>` placeholders, checked with the grammar the runtime
/// compiles them with.
fn path_captures(pattern: &str) -> Result<Vec<String>, String> {
    if pattern.contains("(?P<") {
        return Err(format!(
            "{pattern:?} looks like a regex but is read as a path() pattern: start it with `^`, or write \
             re_path({pattern:?})"
        ));
    }
    let pieces = parse_path(pattern).map_err(|err| match err {
        GrammarError::StrayClose | GrammarError::Unclosed => format!("malformed path() pattern {pattern:?}: {err}"),
        other => format!("{other} (in {pattern:?})"),
    })?;
    Ok(pieces
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Param { name, .. } => Some(name.to_owned()),
            Piece::Literal(_) => None,
        })
        .collect())
}
