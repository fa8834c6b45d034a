//! `routing!` input → a tree of protocols, routers, wrappers and consumers.

use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Block, Expr, Ident, LitStr, Path, Token, bracketed, parenthesized};

pub(crate) struct Table {
    pub(crate) krate: Option<Path>,
    pub(crate) entries: Vec<Entry>,
}

/// `websocket: TARGET`.
pub(crate) struct Entry {
    pub(crate) key: Key,
    pub(crate) target: Target,
}

pub(crate) enum Key {
    /// `http`, `websocket`, or a mistake that `check` reports.
    Ident(Ident),
    /// `"chat"`: a custom protocol.
    Custom(LitStr),
}

pub(crate) enum Target {
    /// `[ "pattern" => target, ... ]`.
    Routes(Vec<Route>),
    /// `Wrapper(inner, args...)`.
    Wrapper { path: Path, inner: Box<Target>, args: Vec<Expr> },
    /// A `#[consumer]` type.
    Consumer(Path),
    /// `{ expression }`: any application.
    Expr(Block),
}

pub(crate) struct Route {
    pub(crate) pattern: Pattern,
    pub(crate) target: Target,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatternKind {
    Path,
    Regex,
}

pub(crate) struct Pattern {
    pub(crate) kind: PatternKind,
    pub(crate) lit: LitStr,
}

impl Parse for Table {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut krate = None;
        if input.peek(Token![crate]) {
            input.parse::<Token![crate]>()?;
            input.parse::<Token![=]>()?;
            krate = Some(Path::parse_mod_style(input)?);
            input.parse::<Token![,]>()?;
        }
        let entries = Punctuated::<Entry, Token![,]>::parse_terminated(input)?;
        if entries.is_empty() {
            return Err(input.error(
                "routing! needs at least one protocol, e.g. `routing! { websocket: [ \"ws/echo/\" => Echo ] }`",
            ));
        }
        Ok(Table { krate, entries: entries.into_iter().collect() })
    }
}

impl Parse for Entry {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let lookahead = input.lookahead1();
        let key = if lookahead.peek(LitStr) {
            Key::Custom(input.parse()?)
        } else if lookahead.peek(Ident) {
            Key::Ident(input.parse()?)
        } else {
            return Err(lookahead.error());
        };
        input.parse::<Token![:]>()?;
        Ok(Entry { key, target: input.parse()? })
    }
}

impl Parse for Target {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(syn::token::Bracket) {
            let content;
            bracketed!(content in input);
            let routes = Punctuated::<Route, Token![,]>::parse_terminated(&content)?;
            return Ok(Target::Routes(routes.into_iter().collect()));
        }
        if input.peek(syn::token::Brace) {
            return Ok(Target::Expr(input.parse()?));
        }
        if !(input.peek(Ident) || input.peek(Token![::]) || input.peek(Token![crate]) || input.peek(Token![self])) {
            return Err(input.error(
                "expected a route list `[ \"pattern\" => Consumer, ... ]`, a `#[consumer]` type, \
                 middleware `Wrapper([ ... ])`, or an application expression in braces `{ ... }`",
            ));
        }
        let path: Path = input.parse()?;
        if !input.peek(syn::token::Paren) {
            return Ok(Target::Consumer(path));
        }
        let content;
        parenthesized!(content in input);
        let inner: Target = content.parse()?;
        let mut args = Vec::new();
        while !content.is_empty() {
            content.parse::<Token![,]>()?;
            if content.is_empty() {
                break;
            }
            if let Ok(Target::Routes(routes)) = content.fork().parse::<Target>()
                && !routes.is_empty()
            {
                let name = path.segments.last().map_or_else(String::new, |segment| segment.ident.to_string());
                return Err(content.error(format!(
                    "the route list comes first: `{name}([ \"pattern\" => Consumer, ... ], other arguments)`; a \
                     middleware's first argument is the application it wraps"
                )));
            }
            args.push(content.parse()?);
        }
        Ok(Target::Wrapper { path, inner: Box::new(inner), args })
    }
}

impl Parse for Route {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let pattern = input.parse()?;
        input.parse::<Token![=>]>()?;
        Ok(Route { pattern, target: input.parse()? })
    }
}

impl Parse for Pattern {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            let kind = if lit.value().starts_with('^') { PatternKind::Regex } else { PatternKind::Path };
            return Ok(Pattern { kind, lit });
        }
        if !input.peek(Ident) {
            return Err(syn::Error::new(
                input.span(),
                "expected a route pattern: \"path/<int:id>/\", r\"^regex/$\", path(\"...\") or re_path(\"...\")",
            ));
        }
        let ident: Ident = input.parse()?;
        let kind = match ident.to_string().as_str() {
            "path" => PatternKind::Path,
            "re_path" => PatternKind::Regex,
            _ => {
                return Err(syn::Error::new_spanned(
                    ident,
                    "expected a route pattern: \"path/<int:id>/\", r\"^regex/$\", path(\"...\") or re_path(\"...\")",
                ));
            }
        };
        let content;
        parenthesized!(content in input);
        let lit: LitStr = content.parse()?;
        Ok(Pattern { kind, lit })
    }
}
